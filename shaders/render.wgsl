// Volume rendering of the field: the forward pass (one thread per ray) and the first half of
// the backward pass, which marches each ray again and writes every sample's gradient with
// respect to its raw density and albedo pre-activation for `field_backward.wgsl`.

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(1) var<storage, read> cameras: array<Camera>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read> levels: array<Level>;
@group(0) @binding(4) var<storage, read> occupancy: array<u32>;
// rgb composited over the background, and opacity.
@group(0) @binding(5) var<storage, read_write> color: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> depth: array<f32>;
// Forward: samples each ray used. Backward: where each ray's samples start in `sample_grads`.
@group(0) @binding(7) var<storage, read_write> sample_counts: array<u32>;
// dL/d(rgb, opacity) per ray.
@group(0) @binding(8) var<storage, read> grad_color: array<vec4<f32>>;

struct SampleGrad {
    // Position and dL/d(raw density).
    position_graw: vec4<f32>,
    // dL/d(albedo pre-activation), unused w.
    grad_albedo: vec4<f32>,
}
@group(0) @binding(9) var<storage, read_write> sample_grads: array<SampleGrad>;

// The rays one backward dispatch takes (their samples must fit one storage binding), and the
// offset of their first sample, subtracted from the frame-wide offsets.
struct RayChunk {
    first_ray: u32,
    rays: u32,
    first_sample: u32,
    _pad: u32,
}
@group(0) @binding(10) var<uniform> chunk: RayChunk;

// The ray of global invocation `gid`, or rays ≥ frame.rays for idle threads.
fn ray_id(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
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

// A sample the renderer uses, or none (empty cell) — the same decision in both passes.
fn skipped(p: vec3<f32>) -> bool {
    return frame.use_occupancy != 0u && occupancy[occupancy_cell(p)] == 0u;
}

@compute @workgroup_size(64)
fn render(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let id = ray_id(gid, groups);
    if id >= frame.rays {
        return;
    }
    let ray = pixel_ray(id);
    let hits = sphere_hits(ray);
    var transmittance = 1.0;
    var rgb = vec3<f32>(0.0);
    var distance = 0.0;
    var count = 0u;
    if hits.x < hits.y {
        let delta = 2.0 * RADIUS / f32(frame.samples_per_ray);
        let offset = ray_jitter(frame, id);
        for (var k = 0u; k < frame.samples_per_ray; k++) {
            let t = hits.x + (f32(k) + offset) * delta;
            if t >= hits.y {
                break;
            }
            let p = ray.origin + t * ray.dir;
            if skipped(p) {
                continue;
            }
            let v = eval_field(p);
            let alpha = one_minus_exp_neg(v.sigma * delta);
            let w = transmittance * alpha;
            rgb += w * v.rgb;
            distance += w * t;
            transmittance *= 1.0 - alpha;
            count++;
            if transmittance < frame.early_stop {
                break;
            }
        }
    }
    color[id] = vec4<f32>(rgb + transmittance * background(ray.dir), 1.0 - transmittance);
    depth[id] = distance;
    sample_counts[id] = count;
}

@compute @workgroup_size(64)
fn ray_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let id = chunk.first_ray + ray_id(gid, groups);
    if id >= chunk.first_ray + chunk.rays {
        return;
    }
    let ray = pixel_ray(id);
    let hits = sphere_hits(ray);
    if hits.x >= hits.y {
        return;
    }
    var slot = sample_counts[id] - chunk.first_sample;
    let out = color[id];
    let g = grad_color[id];
    let bg = background(ray.dir);
    let t_final = 1.0 - out.w;
    // Foreground colour Σ wᵢcᵢ, and the part of dL/dσ shared by every sample.
    let foreground = out.xyz - t_final * bg;
    let every_sample = (g.w - dot(g.xyz, bg)) * t_final;
    let delta = 2.0 * RADIUS / f32(frame.samples_per_ray);
    let offset = ray_jitter(frame, id);
    var transmittance = 1.0;
    var prefix = vec3<f32>(0.0);
    for (var k = 0u; k < frame.samples_per_ray; k++) {
        let t = hits.x + (f32(k) + offset) * delta;
        if t >= hits.y {
            break;
        }
        let p = ray.origin + t * ray.dir;
        if skipped(p) {
            continue;
        }
        let v = eval_field(p);
        let alpha = one_minus_exp_neg(v.sigma * delta);
        let w = transmittance * alpha;
        let next = transmittance * (1.0 - alpha);
        prefix += w * v.rgb;
        // Colour still to come after this sample: Σ_{j>i} wⱼcⱼ.
        let rest = foreground - prefix;
        let g_sigma = every_sample + dot(g.xyz, next * v.rgb - rest);
        let g_albedo = g.xyz * w * v.rgb * (1.0 - v.rgb);
        sample_grads[slot] = SampleGrad(vec4<f32>(p, g_sigma * delta * v.dsigma), vec4<f32>(g_albedo, 0.0));
        slot++;
        transmittance = next;
        if transmittance < frame.early_stop {
            break;
        }
    }
}
