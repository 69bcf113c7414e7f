// Analytic antialiasing (nvdiffrast's), after raster.wgsl whose bindings and helpers it uses.
// Between two neighbouring pixels seeing different triangles, the nearer triangle's edge that
// crosses the segment between their centres farthest towards the other pixel is found; where it
// is a silhouette (the triangle across it folds back, or there is none) and steeper than 45°
// to the segment, the pixel on the far side of the segment's midpoint takes some of the other's
// colour, in proportion to how far past the midpoint the edge lies. The colour then moves
// continuously with the edge's vertices, which is what gives silhouettes a gradient.
//   antialias           one thread per pixel: its colour plus what its four pairs give it
//   antialias_backward  one thread per pixel: dL/d(its colour) from its four pairs, and for
//                       the pairs to its right and below, dL/d(the edge's clip positions)
// Every pixel writes only its own outputs; positions take `grad_add` at frame.clip_grad_offset.

// For each triangle, the vertex across each edge (edge k: vertices k + 1, k + 2), or −1.
@group(0) @binding(9) var<storage, read> opposites: array<i32>;
@group(0) @binding(10) var<storage, read> colours: array<f32>;
@group(0) @binding(11) var<storage, read_write> antialiased: array<f32>;
@group(0) @binding(12) var<storage, read> grad_antialiased: array<f32>;
@group(0) @binding(13) var<storage, read_write> grad_colours: array<f32>;

// How far past the pixel centres a crossing may fall and still count (rasterisers are accurate
// to about 1/16 pixel).
const CROSSING_SLACK: f32 = 0.0625;

struct Crossing {
    hit: bool,
    // The pixel that takes alpha·(colour₁ − colour₀).
    blended: u32,
    alpha: f32,
    // The edge's vertices (indices into `clip`), and dα/d(their clip positions).
    ends: vec2<u32>,
    grad_end0: vec4<f32>,
    grad_end1: vec4<f32>,
}

fn same_sign(a: f32, b: f32) -> bool {
    return ((bitcast<u32>(a) ^ bitcast<u32>(b)) & 0x80000000u) == 0u;
}

fn area(a: vec2<f32>, b: vec2<f32>, c: vec2<f32>) -> f32 {
    return (b.x - a.x) * (c.y - a.y) - (c.x - a.x) * (b.y - a.y);
}

// Pixel-space position (y down) relative to `centre`.
fn screen_of(p: vec4<f32>, centre: vec2<f32>) -> vec2<f32> {
    let size = vec2<f32>(f32(frame.width), f32(frame.height));
    return vec2<f32>(p.x / p.w + 1.0, 1.0 - p.y / p.w) * 0.5 * size - centre;
}

// dα/d(clip position p) from dα/d(its pixel-space position along and across the segment).
fn clip_grad(g: vec2<f32>, p: vec4<f32>, down: bool) -> vec4<f32> {
    let gs = select(g, g.yx, down);
    let half = 0.5 * vec2<f32>(f32(frame.width), f32(frame.height));
    return vec4<f32>(
        gs.x * half.x / p.w,
        -gs.y * half.y / p.w,
        0.0,
        (-gs.x * p.x * half.x + gs.y * p.y * half.y) / (p.w * p.w),
    );
}

// Pixels p0 and p1 (to its right, or below it with `down`).
fn crossing(p0: u32, p1: u32, down: bool) -> Crossing {
    var out: Crossing;
    let r0 = raster[p0];
    let r1 = raster[p1];
    if r0.w == r1.w {
        return out;
    }
    var first = r0.w > 0.0;
    if r0.w > 0.0 && r1.w > 0.0 {
        first = r0.z < r1.z;
    }
    let ds = select(-1.0, 1.0, first);
    let t = u32(select(r1.w, r0.w, first)) - 1u;
    let at = locate(select(p1, p0, first));
    let centre = vec2<f32>(f32(at.y) + 0.5, f32(at.z) + 0.5);
    let base = at.x * frame.vertices;
    let ids = vec3<u32>(triangles[3u * t], triangles[3u * t + 1u], triangles[3u * t + 2u]);
    var s: array<vec2<f32>, 3>;
    var wings: array<vec2<f32>, 3>;
    for (var k = 0u; k < 3u; k++) {
        s[k] = screen_of(clip[base + ids[k]], centre);
        let o = opposites[3u * t + k];
        wings[k] = s[k];
        if o >= 0 {
            wings[k] = screen_of(clip[base + u32(o)], centre);
        }
    }
    let whole = area(s[0], s[1], s[2]);
    let silhouette = vec3<bool>(
        same_sign(area(wings[0], s[1], s[2]), whole),
        same_sign(area(s[0], wings[1], s[2]), whole),
        same_sign(area(s[0], s[1], wings[2]), whole),
    );
    if !any(silhouette) {
        return out;
    }
    // Along the segment: x towards the right neighbour, or (swapped) towards the one below.
    var q = s;
    if down {
        for (var k = 0u; k < 3u; k++) {
            q[k] = s[k].yx;
        }
    }
    var best = 3u;
    var reach = 0.0;
    for (var k = 0u; k < 3u; k++) {
        let a = q[(k + 1u) % 3u];
        let b = q[(k + 2u) % 3u];
        if same_sign(a.y, b.y) {
            continue;
        }
        let r = ds * (a.x * b.y - a.y * b.x) / (b.y - a.y);
        if best == 3u || r >= reach {
            best = k;
            reach = r;
        }
    }
    if best == 3u {
        return out;
    }
    let a = q[(best + 1u) % 3u];
    let b = q[(best + 2u) % 3u];
    if !silhouette[best] || abs(b.y - a.y) < abs(b.x - a.x) {
        return out;
    }
    if reach <= -CROSSING_SLACK || reach >= 1.0 + CROSSING_SLACK {
        return out;
    }
    out.hit = true;
    out.alpha = ds * (0.5 - clamp(reach, 0.0, 1.0));
    out.blended = select(p1, p0, out.alpha > 0.0);
    let e0 = ids[(best + 1u) % 3u];
    let e1 = ids[(best + 2u) % 3u];
    out.ends = vec2<u32>(base + e0, base + e1);
    if reach >= 0.0 && reach <= 1.0 {
        // α = ds/2 − X, X = (a.x b.y − a.y b.x)/(b.y − a.y) the crossing's position.
        let x = ds * reach;
        let d = b.y - a.y;
        out.grad_end0 = clip_grad(-vec2<f32>(b.y / d, (x - b.x) / d), clip[base + e0], down);
        out.grad_end1 = clip_grad(-vec2<f32>(-a.y / d, (a.x - x) / d), clip[base + e1], down);
    }
    return out;
}

// Pair `n` of pixel p (0: left, 1: right, 2: above, 3: below) as (p0, p1, down), with x ≠ 0
// in the last component where the pair exists.
fn pair_of(p: u32, n: u32) -> vec4<u32> {
    let at = locate(p);
    let w = frame.width;
    switch n {
        case 0u: { return vec4<u32>(p - 1u, p, 0u, u32(at.y > 0u)); }
        case 1u: { return vec4<u32>(p, p + 1u, 0u, u32(at.y + 1u < w)); }
        case 2u: { return vec4<u32>(p - w, p, 1u, u32(at.z > 0u)); }
        default: { return vec4<u32>(p, p + w, 1u, u32(at.z + 1u < frame.height)); }
    }
}

@compute @workgroup_size(64)
fn antialias(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let p = invocation(gid, groups);
    if p >= frame.views * frame.width * frame.height {
        return;
    }
    let channels = frame.channels;
    for (var ch = 0u; ch < channels; ch++) {
        antialiased[p * channels + ch] = colours[p * channels + ch];
    }
    for (var n = 0u; n < 4u; n++) {
        let pair = pair_of(p, n);
        if pair.w == 0u {
            continue;
        }
        let c = crossing(pair.x, pair.y, pair.z == 1u);
        if c.hit && c.blended == p {
            for (var ch = 0u; ch < channels; ch++) {
                antialiased[p * channels + ch] += c.alpha * (colours[pair.y * channels + ch] - colours[pair.x * channels + ch]);
            }
        }
    }
}

@compute @workgroup_size(64)
fn antialias_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let p = invocation(gid, groups);
    if p >= frame.views * frame.width * frame.height {
        return;
    }
    let channels = frame.channels;
    for (var ch = 0u; ch < channels; ch++) {
        grad_colours[p * channels + ch] = grad_antialiased[p * channels + ch];
    }
    for (var n = 0u; n < 4u; n++) {
        let pair = pair_of(p, n);
        if pair.w == 0u {
            continue;
        }
        let c = crossing(pair.x, pair.y, pair.z == 1u);
        if !c.hit {
            continue;
        }
        // This pixel is p1 of its left and upper pairs, p0 of the others.
        let sign = select(-1.0, 1.0, p == pair.y);
        var grad_alpha = 0.0;
        for (var ch = 0u; ch < channels; ch++) {
            let g = grad_antialiased[c.blended * channels + ch];
            grad_colours[p * channels + ch] += sign * c.alpha * g;
            grad_alpha += g * (colours[pair.y * channels + ch] - colours[pair.x * channels + ch]);
        }
        // Each pair's position gradient once: from its p0.
        if p == pair.x && grad_alpha != 0.0 {
            let at0 = frame.clip_grad_offset + 4u * c.ends.x;
            let at1 = frame.clip_grad_offset + 4u * c.ends.y;
            grad_add(at0, grad_alpha * c.grad_end0.x);
            grad_add(at0 + 1u, grad_alpha * c.grad_end0.y);
            grad_add(at0 + 3u, grad_alpha * c.grad_end0.w);
            grad_add(at1, grad_alpha * c.grad_end1.x);
            grad_add(at1 + 1u, grad_alpha * c.grad_end1.y);
            grad_add(at1 + 3u, grad_alpha * c.grad_end1.w);
        }
    }
}
