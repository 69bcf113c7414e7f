// The second half of the backward pass: from per-sample gradients (raw density, albedo
// pre-activation) to the gradients of every field parameter.
//
// A workgroup has one thread per hidden unit and walks its share of the samples in tiles of
// TILE: each thread reads its hidden unit's weight rows once, keeps their gradients in
// registers across all its tiles and adds them to `grads` once at the end, so the MLP weights
// see one atomic add per workgroup rather than per sample. The encoding's gradient
// (W1ᵀ·dL/dhidden, a sum over the hidden units) comes from the prelude's `share_hidden_grads`
// and `level_feature_grads`: subgroup additions where the device has them, else a walk over
// the hidden units. It is scattered to the 8 corners of each level with atomic adds, as in
// instant-ngp, one thread per (sample, level) so that a level's corners are found once for all
// its features.
//
// Rows, their gradients and the tile's encodings are kept as vec4s (the encoding zero-padded to
// W4 of them): lavapipe keeps short constant-index vector arrays in registers where scalar arrays
// went through memory lane by lane (the backward took 1.3× as long).

// The sample count is `totals[work.at]`, written on the GPU by the scan (the dispatch is
// indirect, sized by the same total).
struct Work {
    at: u32,
}

struct SampleGrad {
    position_graw: vec4<f32>,
    grad_albedo: vec4<f32>,
}

@group(0) @binding(0) var<uniform> work: Work;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read> levels: array<Level>;
@group(0) @binding(3) var<storage, read> sample_grads: array<SampleGrad>;
// `grads` (binding 4) and `grad_add` come from the prelude.
@group(0) @binding(5) var<storage, read> totals: array<u32>;

var<workgroup> features: array<vec4<f32>, TILE * W4>;
// dL/d(raw density) and dL/d(albedo pre-activation) per tile sample.
var<workgroup> grad_out: array<vec4<f32>, TILE>;
var<workgroup> positions: array<vec3<f32>, TILE>;

@compute @workgroup_size(HIDDEN)
fn field_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    inv: Invocation,
) {
    let j = inv.index;
    let group = wg.x + wg.y * groups.x;
    let samples = totals[work.at];
    var acc_density_w1: array<vec4<f32>, W4>;
    var acc_albedo_w1: array<vec4<f32>, W4>;
    var acc_density_w2 = 0.0;
    var acc_albedo_w2 = vec3<f32>(0.0);
    // This thread's rows of the first layers, read once rather than once per sample.
    var row_density: array<vec4<f32>, W4>;
    var row_albedo: array<vec4<f32>, W4>;
    for (var k = 0u; k < WIDTH; k++) {
        row_density[k / 4u][k % 4u] = params[DENSITY_W1 + j * WIDTH + k];
        row_albedo[k / 4u][k % 4u] = params[ALBEDO_W1 + j * WIDTH + k];
    }
    let w2 = params[DENSITY_W2 + j];
    let a2 = vec3<f32>(params[ALBEDO_W2 + j], params[ALBEDO_W2 + HIDDEN + j], params[ALBEDO_W2 + 2u * HIDDEN + j]);
    // The encoding's padding, which phase 1 never writes.
    for (var i = j; i < TILE * W4; i += HIDDEN) {
        features[i] = vec4<f32>(0.0);
    }

    for (var tile = 0u; tile < TILES_PER_GROUP; tile++) {
        let first = (group * TILES_PER_GROUP + tile) * TILE;
        if first >= samples {
            break;
        }
        // Phase 1: the tile's samples and their encodings, one (sample, level) per thread.
        // Strided, as a workgroup of HIDDEN threads may be smaller than a tile.
        for (var i = j; i < TILE; i += HIDDEN) {
            let s = first + i;
            if s < samples {
                let g = sample_grads[s];
                positions[i] = g.position_graw.xyz;
                grad_out[i] = vec4<f32>(g.position_graw.w, g.grad_albedo.xyz);
            } else {
                positions[i] = vec3<f32>(0.0);
                grad_out[i] = vec4<f32>(0.0);
            }
        }
        workgroupBarrier();
        for (var i = j; i < TILE * LEVELS; i += HIDDEN) {
            let s = i / LEVELS;
            let l = i % LEVELS;
            let f = level_features(positions[s], levels[l]);
            for (var q = 0u; q < FEATURES; q++) {
                let k = l * FEATURES + q;
                features[s * W4 + k / 4u][k % 4u] = f[q];
            }
        }
        workgroupBarrier();
        // Phase 2: hidden unit j of both MLPs over the tile's samples.
        for (var s = 0u; s < TILE; s++) {
            var hd = 0.0;
            var ha = 0.0;
            for (var k = 0u; k < W4; k++) {
                let f = features[s * W4 + k];
                hd += dot(row_density[k], f);
                ha += dot(row_albedo[k], f);
            }
            let g = grad_out[s];
            acc_density_w2 += g.x * max(hd, 0.0);
            acc_albedo_w2 += g.yzw * max(ha, 0.0);
            let gd = select(0.0, g.x * w2, hd > 0.0);
            let ga = select(0.0, dot(g.yzw, a2), ha > 0.0);
            share_hidden_grads(inv, s, gd, ga, &row_density, &row_albedo);
            for (var k = 0u; k < W4; k++) {
                let f = features[s * W4 + k];
                acc_density_w1[k] += gd * f;
                acc_albedo_w1[k] += ga * f;
            }
        }
        workgroupBarrier();
        // Phase 3: the encoding's gradient, one (sample, level) per thread, scattered to the
        // level's table: the 8 corners found once for all the level's features.
        for (var i = j; i < TILE * LEVELS; i += HIDDEN) {
            let s = i / LEVELS;
            let l = i % LEVELS;
            if first + s >= samples {
                continue;
            }
            let gf = level_feature_grads(s, l);
            var any = false;
            for (var q = 0u; q < FEATURES; q++) {
                any = any || gf[q] != 0.0;
            }
            if any {
                let c = level_corners(positions[s], levels[l]);
                for (var corner = 0u; corner < 8u; corner++) {
                    for (var q = 0u; q < FEATURES; q++) {
                        grad_add(c.index[corner] + q, c.weight[corner] * gf[q]);
                    }
                }
            }
        }
        workgroupBarrier();
    }
    for (var k = 0u; k < WIDTH; k++) {
        grad_add(DENSITY_W1 + j * WIDTH + k, acc_density_w1[k / 4u][k % 4u]);
        grad_add(ALBEDO_W1 + j * WIDTH + k, acc_albedo_w1[k / 4u][k % 4u]);
    }
    grad_add(DENSITY_W2 + j, acc_density_w2);
    grad_add(ALBEDO_W2 + j, acc_albedo_w2.x);
    grad_add(ALBEDO_W2 + HIDDEN + j, acc_albedo_w2.y);
    grad_add(ALBEDO_W2 + 2u * HIDDEN + j, acc_albedo_w2.z);
}
