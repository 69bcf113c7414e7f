// Shared by every kernel: the field (hash grid + MLPs), ray generation and sampling helpers.
// The host prepends a prelude of `const`s describing the field (see src/gpu/shader.rs) and,
// for kernels that accumulate gradients, the `grad_add` helper matching the device's atomics.

struct Camera {
    // Rows 0..2 of the camera-to-world matrix (OpenGL camera axes).
    rows: array<vec4<f32>, 3>,
    // Focal length in pixels, width, height, unused.
    intrinsics: vec4<f32>,
}

struct Frame {
    rays: u32,
    width: u32,
    height: u32,
    samples_per_ray: u32,
    early_stop: f32,
    // 0: samples mid-step; otherwise the hashed seed of the per-ray offset.
    jitter_seed: u32,
    stratified: u32,
    use_occupancy: u32,
    background: vec4<f32>,
}

// One hash-grid level: resolution, table size, first entry, dense (1) or hashed (0).
alias Level = vec4<u32>;

fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn ray_jitter(frame: Frame, ray: u32) -> f32 {
    if frame.stratified == 0u {
        return 0.5;
    }
    return f32(pcg_hash(ray ^ frame.jitter_seed) >> 8u) / 16777216.0;
}

struct Ray {
    origin: vec3<f32>,
    dir: vec3<f32>,
}

fn camera_ray(cam: Camera, x: u32, y: u32) -> Ray {
    let f = cam.intrinsics.x;
    let local = vec3<f32>(
        (f32(x) + 0.5 - cam.intrinsics.y * 0.5) / f,
        -(f32(y) + 0.5 - cam.intrinsics.z * 0.5) / f,
        -1.0,
    );
    let world = vec3<f32>(
        dot(cam.rows[0].xyz, local),
        dot(cam.rows[1].xyz, local),
        dot(cam.rows[2].xyz, local),
    );
    return Ray(vec3<f32>(cam.rows[0].w, cam.rows[1].w, cam.rows[2].w), normalize(world));
}

// (near, far) inside the field's box [−RADIUS, RADIUS]³ from no earlier than the origin (nerfacc's
// `roi_aabb` clipping), or near ≥ far when the ray misses. Direction components below 1e-9 are
// taken as 1e-9, so the slab test never divides by zero.
fn box_hits(ray: Ray) -> vec2<f32> {
    let d = select(ray.dir, vec3<f32>(1e-9), abs(ray.dir) < vec3<f32>(1e-9));
    let inv = 1.0 / d;
    let a = (vec3<f32>(-RADIUS) - ray.origin) * inv;
    let b = (vec3<f32>(RADIUS) - ray.origin) * inv;
    let lo = min(a, b);
    let hi = max(a, b);
    let near = max(max(max(lo.x, lo.y), lo.z), 0.0);
    let far = min(min(hi.x, hi.y), hi.z);
    return vec2<f32>(near, far);
}

// Distance between samples: threestudio's render_step_size, STEP_FACTOR (1.732 ≈ √3) times the
// box's side over the samples per ray, so a ray along the box's diagonal gets them all.
fn render_step(samples_per_ray: u32) -> f32 {
    return STEP_FACTOR * 2.0 * RADIUS / f32(samples_per_ray);
}

fn occupancy_cell(p: vec3<f32>) -> u32 {
    let n = f32(OCC_RES);
    let u = clamp((p / RADIUS + 1.0) * 0.5, vec3<f32>(0.0), vec3<f32>(1.0));
    let c = min(vec3<u32>(u * n), vec3<u32>(OCC_RES - 1u));
    return c.x + c.y * OCC_RES + c.z * OCC_RES * OCC_RES;
}

fn vertex_index(v: vec3<u32>, level: Level) -> u32 {
    if level.w == 1u {
        let n = level.x + 1u;
        return v.x + v.y * n + v.z * n * n;
    }
    let h = v.x ^ (v.y * 2654435761u) ^ (v.z * 805459861u);
    // Hashed tables have a power-of-two size: a mask, not an integer division (which CPUs
    // cannot vectorise: it was most of the backward's time on lavapipe).
    return h & (level.y - 1u);
}

// The 8 corners of `p`'s cell at `level`: parameter index of feature 0 and trilinear weight.
struct Corners {
    index: array<u32, 8>,
    weight: array<f32, 8>,
}

fn level_corners(p: vec3<f32>, level: Level) -> Corners {
    let res = level.x;
    let u = clamp((p / RADIUS + 1.0) * 0.5, vec3<f32>(0.0), vec3<f32>(1.0));
    let g = u * f32(res);
    let cell = min(vec3<u32>(floor(g)), vec3<u32>(res - 1u));
    let frac = g - vec3<f32>(cell);
    var out: Corners;
    for (var corner = 0u; corner < 8u; corner++) {
        let bits = vec3<u32>(corner & 1u, (corner >> 1u) & 1u, (corner >> 2u) & 1u);
        let w = select(1.0 - frac, frac, bits == vec3<u32>(1u));
        out.index[corner] = (level.z + vertex_index(cell + bits, level)) * FEATURES;
        out.weight[corner] = w.x * w.y * w.z;
    }
    return out;
}

// A level's features at `p`: trilinear over the 8 corners of its cell (from `params`, which
// every kernel with the field declares).
fn level_features(p: vec3<f32>, level: Level) -> array<f32, FEATURES> {
    let c = level_corners(p, level);
    var out: array<f32, FEATURES>;
    for (var q = 0u; q < FEATURES; q++) {
        var acc = 0.0;
        for (var corner = 0u; corner < 8u; corner++) {
            acc += c.weight[corner] * params[c.index[corner] + q];
        }
        out[q] = acc;
    }
    return out;
}

fn blob(p: vec3<f32>) -> f32 {
    return BLOB_SCALE * (1.0 - length(p) / BLOB_STD);
}

// WGSL only bounds log's absolute error near 1 (2⁻²¹), which is a large relative error for the
// tiny densities and opacities outside the blob; short series take over there.

// log(1 + eˣ).
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        return x;
    }
    let e = exp(x);
    if e < 0.125 {
        // log1p(e) to within e⁸/8.
        return e * (1.0 - e * (1.0 / 2.0 - e * (1.0 / 3.0 - e * (1.0 / 4.0 - e * (1.0 / 5.0 - e * (1.0 / 6.0 - e / 7.0))))));
    }
    return log(1.0 + e);
}

// 1 − e⁻ˣ for x ≥ 0: a sample's opacity.
fn one_minus_exp_neg(x: f32) -> f32 {
    if x < 0.125 {
        // −expm1(−x) to within x⁷/7!.
        return x * (1.0 - x * (1.0 / 2.0 - x * (1.0 / 6.0 - x * (1.0 / 24.0 - x * (1.0 / 120.0 - x / 720.0)))));
    }
    return 1.0 - exp(-x);
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}
