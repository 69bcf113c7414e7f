// `field_backward`'s sum over hidden units with subgroup additions: in phase 2 each subgroup
// adds its threads' parts of W1ᵀ·dL/dhidden and keeps one partial sum per sample in workgroup
// memory; the scatter adds the subgroups' partials. SUBGROUP_SLOTS (from the prelude) bounds the
// subgroups of a workgroup: HIDDEN over the device's smallest subgroup size.

struct Invocation {
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
}

var<workgroup> partial_feature_grads: array<vec4<f32>, SUBGROUP_SLOTS * TILE * W4>;
var<workgroup> subgroup_count: u32;

// Called by every thread of the workgroup (subgroup operations need uniform control flow).
fn share_hidden_grads(
    inv: Invocation,
    s: u32,
    gd: f32,
    ga: f32,
    row_density: ptr<function, array<vec4<f32>, W4>>,
    row_albedo: ptr<function, array<vec4<f32>, W4>>,
) {
    for (var k = 0u; k < W4; k++) {
        let sum = subgroupAdd((*row_density)[k] * gd + (*row_albedo)[k] * ga);
        if inv.lane == 0u {
            partial_feature_grads[(inv.subgroup * TILE + s) * W4 + k] = sum;
        }
    }
    if inv.index == 0u {
        subgroup_count = inv.subgroups;
    }
}

fn level_feature_grads(s: u32, l: u32) -> array<f32, FEATURES> {
    var out: array<f32, FEATURES>;
    for (var g = 0u; g < subgroup_count; g++) {
        for (var q = 0u; q < FEATURES; q++) {
            let k = l * FEATURES + q;
            out[q] += partial_feature_grads[(g * TILE + s) * W4 + k / 4u][k % 4u];
        }
    }
    return out;
}
