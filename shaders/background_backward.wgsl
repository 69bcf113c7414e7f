// Gradients of the neural background's weights. A ray's background is weighted by its final
// transmittance, so dL/dbackground = dL/drgb · (1 − opacity) from the forward output alone.
// Each workgroup takes 8 tiles of 32 rays: one thread per ray computes the activations and
// their gradients, then each thread sums its share of the weights over the tile's rays, and
// adds them to `grads` once at the end.

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(1) var<storage, read> cameras: array<Camera>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read> color: array<vec4<f32>>;
// `grads` (binding 4) and `grad_add` come from the prelude.
@group(0) @binding(5) var<storage, read> grad_color: array<vec4<f32>>;

const RAYS: u32 = 32u;
const TILES: u32 = 8u;
const WEIGHTS: u32 = BG_HIDDEN * 9u + BG_HIDDEN * BG_HIDDEN + 3u * BG_HIDDEN;
const PER_THREAD: u32 = (WEIGHTS + 63u) / 64u;

var<workgroup> sh: array<f32, RAYS * 9u>;
var<workgroup> h1: array<f32, RAYS * BG_HIDDEN>;
var<workgroup> h2: array<f32, RAYS * BG_HIDDEN>;
var<workgroup> g_h1: array<f32, RAYS * BG_HIDDEN>;
var<workgroup> g_h2: array<f32, RAYS * BG_HIDDEN>;
var<workgroup> g_out: array<vec3<f32>, RAYS>;

@compute @workgroup_size(64)
fn background_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let group = wg.x + wg.y * groups.x;
    var acc: array<f32, PER_THREAD>;
    for (var tile = 0u; tile < TILES; tile++) {
        let first = (group * TILES + tile) * RAYS;
        if t < RAYS {
            let id = first + t;
            var go = vec3<f32>(0.0);
            var a: BackgroundActivations;
            if id < frame.rays {
                let pixels = frame.width * frame.height;
                let pixel = id % pixels;
                let ray = camera_ray(cameras[id / pixels], pixel % frame.width, pixel / frame.width);
                a = background_activations(ray.dir);
                let g = grad_color[id].xyz * (1.0 - color[id].w);
                go = g * a.rgb * (1.0 - a.rgb);
            }
            g_out[t] = go;
            for (var i = 0u; i < 9u; i++) {
                sh[t * 9u + i] = a.sh[i];
            }
            for (var j = 0u; j < BG_HIDDEN; j++) {
                h1[t * BG_HIDDEN + j] = a.h1[j];
                h2[t * BG_HIDDEN + j] = a.h2[j];
                let w3 = vec3<f32>(params[BG_W3 + j], params[BG_W3 + BG_HIDDEN + j], params[BG_W3 + 2u * BG_HIDDEN + j]);
                g_h2[t * BG_HIDDEN + j] = select(0.0, dot(go, w3), a.h2[j] > 0.0);
            }
            for (var k = 0u; k < BG_HIDDEN; k++) {
                var g = 0.0;
                for (var j = 0u; j < BG_HIDDEN; j++) {
                    g += params[BG_W2 + j * BG_HIDDEN + k] * g_h2[t * BG_HIDDEN + j];
                }
                g_h1[t * BG_HIDDEN + k] = select(0.0, g, a.h1[k] > 0.0);
            }
        }
        workgroupBarrier();
        for (var n = 0u; n < PER_THREAD; n++) {
            let w = t + n * 64u;
            if w >= WEIGHTS {
                break;
            }
            var sum = 0.0;
            if w < BG_HIDDEN * 9u {
                let k = w / 9u;
                let i = w % 9u;
                for (var r = 0u; r < RAYS; r++) {
                    sum += g_h1[r * BG_HIDDEN + k] * sh[r * 9u + i];
                }
            } else if w < BG_HIDDEN * 9u + BG_HIDDEN * BG_HIDDEN {
                let v = w - BG_HIDDEN * 9u;
                let j = v / BG_HIDDEN;
                let k = v % BG_HIDDEN;
                for (var r = 0u; r < RAYS; r++) {
                    sum += g_h2[r * BG_HIDDEN + j] * h1[r * BG_HIDDEN + k];
                }
            } else {
                let v = w - BG_HIDDEN * 9u - BG_HIDDEN * BG_HIDDEN;
                let c = v / BG_HIDDEN;
                let j = v % BG_HIDDEN;
                for (var r = 0u; r < RAYS; r++) {
                    sum += g_out[r][c] * h2[r * BG_HIDDEN + j];
                }
            }
            acc[n] += sum;
        }
        workgroupBarrier();
    }
    for (var n = 0u; n < PER_THREAD; n++) {
        let w = t + n * 64u;
        if w < WEIGHTS {
            grad_add(BG_W1 + w, acc[n]);
        }
    }
}
