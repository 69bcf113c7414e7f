// Volume rendering over packed samples (nerfacc's layout). Rays are taken in chunks; for each:
//   count_samples   one thread per ray: occupied samples along it (the march, no field)
//   (scan.wgsl)     exclusive prefix sum of the counts: where each ray's samples start
//   write_samples   one thread per ray: the march again, writing (position, t) to its slots
//   eval_samples    per tile of samples: σ and albedo (one thread per hidden unit, then per sample)
//   composite       one thread per ray: front to back over its contiguous samples, early stop
// and backward:
//   (scan.wgsl)     prefix sum of the samples each ray composited: the gradient list's layout
//   composite_backward  one thread per ray: dL/d(raw density), dL/d(albedo pre-activation)
//                   per composited sample, from the values the forward pass saved (no field
//                   evaluation) into the list `field_backward.wgsl` reads.
// A chunk's sample buffers hold `chunk.capacity` samples; samples past it are not written and
// the host, which reads every chunk's total with the image, renders again with larger buffers.

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(1) var<storage, read> cameras: array<Camera>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read> levels: array<Level>;
@group(0) @binding(4) var<storage, read> occupancy: array<u32>;
// rgb composited over the background, and opacity; per ray of the frame.
@group(0) @binding(5) var<storage, read_write> color: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> depth: array<f32>;
// Per ray of the chunk, plus one: the marched counts, which the scan turns into each ray's first
// slot (the extra entry becomes the chunk's total).
@group(0) @binding(7) var<storage, read_write> offsets: array<u32>;
// dL/d(rgb, opacity) per ray of the frame.
@group(0) @binding(8) var<storage, read> grad_color: array<vec4<f32>>;

struct SampleGrad {
    // Position and dL/d(raw density).
    position_graw: vec4<f32>,
    // dL/d(albedo pre-activation), unused w.
    grad_albedo: vec4<f32>,
}
@group(0) @binding(9) var<storage, read_write> sample_grads: array<SampleGrad>;

// The rays of one chunk and the samples its buffers hold.
struct Chunk {
    first_ray: u32,
    rays: u32,
    capacity: u32,
    _pad: u32,
}
@group(0) @binding(10) var<uniform> chunk: Chunk;
// Per sample: position and t (march), σ and albedo (evaluation).
@group(0) @binding(11) var<storage, read_write> points: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read_write> values: array<vec4<f32>>;
// Per ray of the chunk, plus one (0): the samples compositing used, up to early termination.
@group(0) @binding(13) var<storage, read_write> used: array<u32>;
// The exclusive prefix sum of `used`: where each ray's sample gradients start.
@group(0) @binding(14) var<storage, read> grad_offsets: array<u32>;

// Invocation `gid` of a 2-D dispatch of 64-wide workgroups, as one index.
fn invocation(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 64u;
}

fn pixel_ray(ray: u32) -> Ray {
    let pixels = frame.width * frame.height;
    let view = ray / pixels;
    let pixel = ray % pixels;
    return camera_ray(cameras[view], pixel % frame.width, pixel / frame.width);
}

// The colour behind the field along `dir`: a solid colour when the frame overrides the
// field's background (w = 1: training's random-colour augmentation).
fn background(dir: vec3<f32>) -> vec3<f32> {
    if NEURAL_BACKGROUND && frame.background.w == 0.0 {
        return background_activations(dir).rgb;
    }
    return frame.background.xyz;
}

// A sample position the renderer skips (empty cell).
fn skipped(p: vec3<f32>) -> bool {
    return frame.use_occupancy != 0u && occupancy[occupancy_cell(p)] == 0u;
}

// Index of the first sample past the occupancy cell `p` (at sample `k`) lies in, less a margin
// of δ/1000 (far above f32 rounding): samples before it are in the same cell, so an empty
// cell's samples need no test. Never less than `k + 1`.
fn after_cell(ray: Ray, p: vec3<f32>, k: u32, near: f32, delta: f32, offset: f32) -> u32 {
    let n = f32(OCC_RES);
    let u = clamp((p / RADIUS + 1.0) * 0.5, vec3<f32>(0.0), vec3<f32>(1.0));
    let cell = min(floor(u * n), vec3<f32>(n - 1.0));
    let low = (cell / n * 2.0 - 1.0) * RADIUS;
    let high = ((cell + 1.0) / n * 2.0 - 1.0) * RADIUS;
    let d = select(ray.dir, vec3<f32>(1e-9), abs(ray.dir) < vec3<f32>(1e-9));
    let exits = (select(low, high, d > vec3<f32>(0.0)) - ray.origin) / d;
    let exit = min(min(exits.x, exits.y), exits.z);
    let last = floor((exit - near) / delta - offset - 1e-3);
    return select(k + 1u, u32(last) + 1u, last >= f32(k + 1u));
}

// The march of frame ray `id`: fixed steps from the box entry, offset by the ray's jitter, over
// the occupied cells (empty cells are stepped over whole). With `write`, stores its `limit`
// occupied samples from `first_slot` on (never past the chunk's capacity) and stops there.
fn march(id: u32, write: bool, first_slot: u32, limit: u32) -> u32 {
    let ray = pixel_ray(id);
    let hits = box_hits(ray);
    if hits.x >= hits.y || limit == 0u {
        return 0u;
    }
    let delta = render_step(frame.samples_per_ray);
    let offset = ray_jitter(frame, id);
    var count = 0u;
    var k = 0u;
    while k < frame.samples_per_ray && count < limit {
        let t = hits.x + (f32(k) + offset) * delta;
        if t >= hits.y {
            break;
        }
        let p = ray.origin + t * ray.dir;
        if skipped(p) {
            k = after_cell(ray, p, k, hits.x, delta, offset);
            continue;
        }
        let slot = first_slot + count;
        if write && slot < chunk.capacity {
            points[slot] = vec4<f32>(p, t);
        }
        count++;
        k++;
    }
    return count;
}

@compute @workgroup_size(64)
fn count_samples(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if i == 0u {
        offsets[chunk.rays] = 0u;
    }
    if i < chunk.rays {
        offsets[i] = march(chunk.first_ray + i, false, 0u, 0xffffffffu);
    }
}

@compute @workgroup_size(64)
fn write_samples(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if i < chunk.rays {
        march(chunk.first_ray + i, true, offsets[i], offsets[i + 1u] - offsets[i]);
    }
}

// eval_samples: a workgroup has one thread per hidden unit and evaluates EVAL_TILES_PER_GROUP
// tiles of EVAL_TILE samples, as field_backward walks them: the tile's encodings go to workgroup
// memory, one (sample, level) per thread; each thread applies its hidden unit's rows of both
// first layers (read once per workgroup, kept in registers) to every sample of the tile; then
// one thread per sample applies the output layers. One thread per sample over the whole field
// read every weight once per sample, which lavapipe serves lane by lane.
var<workgroup> tile_positions: array<vec3<f32>, EVAL_TILE>;
var<workgroup> tile_features: array<vec4<f32>, EVAL_TILE * W4>;
// ReLU'd hidden units per tile sample: density, albedo.
var<workgroup> tile_hidden: array<vec2<f32>, EVAL_TILE * HIDDEN>;
var<workgroup> tile_samples: u32;

@compute @workgroup_size(HIDDEN)
fn eval_samples(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) j: u32,
) {
    if j == 0u {
        tile_samples = min(offsets[chunk.rays], chunk.capacity);
    }
    let samples = workgroupUniformLoad(&tile_samples);
    let group = wg.x + wg.y * groups.x;
    var row_density: array<vec4<f32>, W4>;
    var row_albedo: array<vec4<f32>, W4>;
    for (var k = 0u; k < WIDTH; k++) {
        row_density[k / 4u][k % 4u] = params[DENSITY_W1 + j * WIDTH + k];
        row_albedo[k / 4u][k % 4u] = params[ALBEDO_W1 + j * WIDTH + k];
    }
    // The encoding's padding, which the encoding phase never writes.
    for (var i = j; i < EVAL_TILE * W4; i += HIDDEN) {
        tile_features[i] = vec4<f32>(0.0);
    }
    for (var tile = 0u; tile < EVAL_TILES_PER_GROUP; tile++) {
        let first = (group * EVAL_TILES_PER_GROUP + tile) * EVAL_TILE;
        if first >= samples {
            break;
        }
        // A tile's samples past the last are evaluated at the last one's position, not written.
        for (var i = j; i < EVAL_TILE; i += HIDDEN) {
            tile_positions[i] = points[min(first + i, samples - 1u)].xyz;
        }
        workgroupBarrier();
        for (var i = j; i < EVAL_TILE * LEVELS; i += HIDDEN) {
            let s = i / LEVELS;
            let l = i % LEVELS;
            let f = level_features(tile_positions[s], levels[l]);
            for (var q = 0u; q < FEATURES; q++) {
                let k = l * FEATURES + q;
                tile_features[s * W4 + k / 4u][k % 4u] = f[q];
            }
        }
        workgroupBarrier();
        for (var s = 0u; s < EVAL_TILE; s++) {
            var hd = 0.0;
            var ha = 0.0;
            for (var k = 0u; k < W4; k++) {
                let f = tile_features[s * W4 + k];
                hd += dot(row_density[k], f);
                ha += dot(row_albedo[k], f);
            }
            tile_hidden[s * HIDDEN + j] = max(vec2<f32>(hd, ha), vec2<f32>(0.0));
        }
        workgroupBarrier();
        for (var s = j; s < EVAL_TILE; s += HIDDEN) {
            if first + s < samples {
                var raw = 0.0;
                var pre = vec3<f32>(0.0);
                for (var h = 0u; h < HIDDEN; h++) {
                    let w2 = output_weights(h);
                    let a = tile_hidden[s * HIDDEN + h];
                    raw += w2.x * a.x;
                    pre += w2.yzw * a.y;
                }
                let v = field_value(tile_positions[s], raw, pre);
                values[first + s] = vec4<f32>(v.sigma, v.rgb);
            }
        }
        workgroupBarrier();
    }
}

// The samples of chunk ray `i` whose values are in the buffers.
fn stored_samples(i: u32) -> vec2<u32> {
    let first = min(offsets[i], chunk.capacity);
    let last = min(offsets[i + 1u], chunk.capacity);
    return vec2<u32>(first, last);
}

@compute @workgroup_size(64)
fn composite(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if i == 0u {
        used[chunk.rays] = 0u;
    }
    if i >= chunk.rays {
        return;
    }
    let id = chunk.first_ray + i;
    let span = stored_samples(i);
    let delta = render_step(frame.samples_per_ray);
    var transmittance = 1.0;
    var rgb = vec3<f32>(0.0);
    var distance = 0.0;
    var count = 0u;
    for (var s = span.x; s < span.y; s++) {
        let v = values[s];
        let alpha = one_minus_exp_neg(v.x * delta);
        let w = transmittance * alpha;
        rgb += w * v.yzw;
        distance += w * points[s].w;
        transmittance *= 1.0 - alpha;
        count++;
        if transmittance < frame.early_stop {
            break;
        }
    }
    color[id] = vec4<f32>(rgb + transmittance * background(pixel_ray(id).dir), 1.0 - transmittance);
    depth[id] = distance;
    used[i] = count;
}

// dL/dσᵢ = δ·[g_rgb·(Tᵢ₊₁(cᵢ − Rᵢ)) + T_final·(g_opacity − g_rgb·background)], where Rᵢ is
// the colour the rest of the ray adds as seen from after sample i. R comes from a walk back
// to front (Rᵢ₋₁ = αᵢcᵢ + (1 − αᵢ)Rᵢ) rather than as the final colour minus a running prefix,
// whose difference of nearly equal sums loses every digit once a ray is nearly opaque.
@compute @workgroup_size(64)
fn composite_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(gid, groups);
    if i >= chunk.rays {
        return;
    }
    let id = chunk.first_ray + i;
    let first = offsets[i];
    // Exactly the samples the forward pass composited: never another ray's slots.
    let count = used[i];
    let out_slot = grad_offsets[i];
    let g = grad_color[id];
    let delta = render_step(frame.samples_per_ray);
    // Front to back: each sample's transmittance, kept in its gradient slot's unused w.
    var transmittance = 1.0;
    for (var k = 0u; k < count; k++) {
        sample_grads[out_slot + k].grad_albedo.w = transmittance;
        transmittance *= 1.0 - one_minus_exp_neg(values[first + k].x * delta);
    }
    let every_sample = (g.w - dot(g.xyz, background(pixel_ray(id).dir))) * transmittance;
    // Back to front.
    var rest = vec3<f32>(0.0);
    for (var k = count; k > 0u; k--) {
        let slot = out_slot + k - 1u;
        let v = values[first + k - 1u];
        let rgb = v.yzw;
        let alpha = one_minus_exp_neg(v.x * delta);
        let before = sample_grads[slot].grad_albedo.w;
        let g_sigma = every_sample + before * (1.0 - alpha) * dot(g.xyz, rgb - rest);
        // σ = softplus(x), so dσ/dx = sigmoid(x) = 1 − e^(−σ).
        let dsigma = one_minus_exp_neg(v.x);
        let g_albedo = g.xyz * before * alpha * rgb * (1.0 - rgb);
        sample_grads[slot] = SampleGrad(
            vec4<f32>(points[first + k - 1u].xyz, g_sigma * delta * dsigma),
            vec4<f32>(g_albedo, 0.0),
        );
        rest = alpha * rgb + (1.0 - alpha) * rest;
    }
}
