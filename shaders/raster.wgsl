// Differentiable rasterisation (see src/raster/mod.rs for the conventions):
//   visibility_vertex/_fragment  the hardware rasteriser with a depth test writes each pixel's
//                   nearest triangle + 1 (0: none); one instance per view, each view drawn to
//                   its own band of rows of one target
//   resolve         one thread per pixel: perspective-correct barycentrics and depth of that
//                   triangle, solved in homogeneous coordinates (not the hardware's interpolants,
//                   so the backward differentiates exactly what the forward computed)
//   interpolate     one thread per pixel: vertex attributes at the pixel
//   interpolate_backward  one thread per pixel: dL/d(attributes) and dL/d(clip positions),
//                   scattered with `grad_add` (from the prelude) into one buffer, the
//                   attributes' gradients first
// antialias.wgsl follows, with the antialiasing kernels.
// The prelude supplies binding 4 (`grads`) and `grad_add`.

struct RasterFrame {
    views: u32,
    width: u32,
    height: u32,
    vertices: u32,
    channels: u32,
    // u32s per row of `ids` (rows of texture copies are padded to 256 bytes).
    row_pitch: u32,
    // Where the clip positions' gradients start in `grads`.
    clip_grad_offset: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> frame: RasterFrame;
// Per view, `frame.vertices` clip positions.
@group(0) @binding(1) var<storage, read> clip: array<vec4<f32>>;
// Three vertex indices per triangle.
@group(0) @binding(2) var<storage, read> triangles: array<u32>;
// The visibility target copied out: row (view · height + y), column x.
@group(0) @binding(3) var<storage, read> ids: array<u32>;
// Per pixel: (b₀, b₁, z/w, triangle + 1).
@group(0) @binding(5) var<storage, read_write> raster: array<vec4<f32>>;
// `frame.channels` per vertex, shared by every view.
@group(0) @binding(6) var<storage, read> attributes: array<f32>;
@group(0) @binding(7) var<storage, read_write> interpolated: array<f32>;
@group(0) @binding(8) var<storage, read> grad_interpolated: array<f32>;

struct Varyings {
    @builtin(position) position: vec4<f32>,
    @location(0) @interpolate(flat) id: u32,
}

@vertex
fn visibility_vertex(@builtin(vertex_index) i: u32, @builtin(instance_index) view: u32) -> Varyings {
    return Varyings(clip[view * frame.vertices + triangles[i]], i / 3u + 1u);
}

@fragment
fn visibility_fragment(v: Varyings) -> @location(0) u32 {
    return v.id;
}

// Invocation `gid` of a 2-D dispatch of 64-wide workgroups, as one index.
fn invocation(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 64u;
}

fn pixel_ndc(x: u32, y: u32) -> vec2<f32> {
    return vec2<f32>(
        (f32(x) + 0.5) / f32(frame.width) * 2.0 - 1.0,
        1.0 - (f32(y) + 0.5) / f32(frame.height) * 2.0,
    );
}

fn triangle_clip(view: u32, t: u32) -> array<vec4<f32>, 3> {
    let base = view * frame.vertices;
    return array<vec4<f32>, 3>(
        clip[base + triangles[3u * t]],
        clip[base + triangles[3u * t + 1u]],
        clip[base + triangles[3u * t + 2u]],
    );
}

// The homogeneous solve: weights n / sum, with n = a × c, aᵢ = xᵢ − pₓwᵢ, cᵢ = yᵢ − p_y wᵢ.
struct Solve {
    a: vec3<f32>,
    c: vec3<f32>,
    n: vec3<f32>,
    sum: f32,
}

fn solve(p: array<vec4<f32>, 3>, ndc: vec2<f32>) -> Solve {
    let w = vec3<f32>(p[0].w, p[1].w, p[2].w);
    let a = vec3<f32>(p[0].x, p[1].x, p[2].x) - ndc.x * w;
    let c = vec3<f32>(p[0].y, p[1].y, p[2].y) - ndc.y * w;
    let n = cross(a, c);
    return Solve(a, c, n, n.x + n.y + n.z);
}

// (view, x, y) of pixel `i`.
fn locate(i: u32) -> vec3<u32> {
    let per_view = frame.width * frame.height;
    let pixel = i % per_view;
    return vec3<u32>(i / per_view, pixel % frame.width, pixel / frame.width);
}

@compute @workgroup_size(64)
fn resolve(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if i >= frame.views * frame.width * frame.height {
        return;
    }
    let at = locate(i);
    let id = ids[(at.x * frame.height + at.z) * frame.row_pitch + at.y];
    if id == 0u {
        raster[i] = vec4<f32>(0.0);
        return;
    }
    let p = triangle_clip(at.x, id - 1u);
    let s = solve(p, pixel_ndc(at.y, at.z));
    let b = s.n / s.sum;
    let depth = dot(b, vec3<f32>(p[0].z, p[1].z, p[2].z)) / dot(b, vec3<f32>(p[0].w, p[1].w, p[2].w));
    raster[i] = vec4<f32>(b.x, b.y, depth, f32(id));
}

@compute @workgroup_size(64)
fn interpolate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if i >= frame.views * frame.width * frame.height {
        return;
    }
    let r = raster[i];
    let out = i * frame.channels;
    if r.w == 0.0 {
        for (var ch = 0u; ch < frame.channels; ch++) {
            interpolated[out + ch] = 0.0;
        }
        return;
    }
    let t = u32(r.w) - 1u;
    let b = vec3<f32>(r.x, r.y, 1.0 - r.x - r.y);
    let v = vec3<u32>(triangles[3u * t], triangles[3u * t + 1u], triangles[3u * t + 2u]) * frame.channels;
    for (var ch = 0u; ch < frame.channels; ch++) {
        interpolated[out + ch] = b.x * attributes[v.x + ch] + b.y * attributes[v.y + ch] + b.z * attributes[v.z + ch];
    }
}

// dL/db from the attributes; then through b = n / Σn: dL/dn = (dL/db − ⟨dL/db, b⟩) / Σn, and
// n = a × c gives dL/da = c × dL/dn, dL/dc = dL/dn × a; aᵢ = xᵢ − pₓwᵢ, cᵢ = yᵢ − p_y wᵢ.
@compute @workgroup_size(64)
fn interpolate_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if i >= frame.views * frame.width * frame.height {
        return;
    }
    let r = raster[i];
    if r.w == 0.0 {
        return;
    }
    let t = u32(r.w) - 1u;
    let at = locate(i);
    let ndc = pixel_ndc(at.y, at.z);
    let s = solve(triangle_clip(at.x, t), ndc);
    let b = s.n / s.sum;
    var grad_b = vec3<f32>(0.0);
    for (var k = 0u; k < 3u; k++) {
        let v = triangles[3u * t + k];
        for (var ch = 0u; ch < frame.channels; ch++) {
            let g = grad_interpolated[i * frame.channels + ch];
            grad_add(v * frame.channels + ch, b[k] * g);
            grad_b[k] += g * attributes[v * frame.channels + ch];
        }
    }
    let grad_n = (grad_b - dot(grad_b, b)) / s.sum;
    let grad_a = cross(s.c, grad_n);
    let grad_c = cross(grad_n, s.a);
    for (var k = 0u; k < 3u; k++) {
        let at_vertex = frame.clip_grad_offset + 4u * (at.x * frame.vertices + triangles[3u * t + k]);
        grad_add(at_vertex, grad_a[k]);
        grad_add(at_vertex + 1u, grad_c[k]);
        grad_add(at_vertex + 3u, -ndc.x * grad_a[k] - ndc.y * grad_c[k]);
    }
}
