// `field_backward`'s sum over hidden units without subgroup operations: phase 2 leaves every
// hidden unit's gradient in workgroup memory and the scatter's (sample, level) threads walk
// them against the weight columns.

struct Invocation {
    @builtin(local_invocation_index) index: u32,
}

var<workgroup> grad_hidden_density: array<f32, TILE * HIDDEN>;
var<workgroup> grad_hidden_albedo: array<f32, TILE * HIDDEN>;

fn share_hidden_grads(
    inv: Invocation,
    s: u32,
    gd: f32,
    ga: f32,
    row_density: ptr<function, array<vec4<f32>, W4>>,
    row_albedo: ptr<function, array<vec4<f32>, W4>>,
) {
    grad_hidden_density[s * HIDDEN + inv.index] = gd;
    grad_hidden_albedo[s * HIDDEN + inv.index] = ga;
}

fn level_feature_grads(s: u32, l: u32) -> array<f32, FEATURES> {
    var out: array<f32, FEATURES>;
    for (var q = 0u; q < FEATURES; q++) {
        let k = l * FEATURES + q;
        for (var h = 0u; h < HIDDEN; h++) {
            out[q] += params[DENSITY_W1 + h * WIDTH + k] * grad_hidden_density[s * HIDDEN + h]
                + params[ALBEDO_W1 + h * WIDTH + k] * grad_hidden_albedo[s * HIDDEN + h];
        }
    }
    return out;
}
