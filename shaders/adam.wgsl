// AdamW over the flat parameter vector with two learning rates (hash grid, then MLPs); the
// gradient is cleared as it is consumed, ready for the next backward pass. Parameters that come
// out non-finite are counted per parameter group, so that a diverging run is caught with one
// small download rather than a readback of every parameter.

struct AdamStep {
    len: u32,
    grid_params: u32,
    lr_grid: f32,
    lr_mlp: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    // 1 − β₁ᵗ and 1 − β₂ᵗ, computed on the host in f64.
    bias_correction1: f32,
    bias_correction2: f32,
    groups_x: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> step: AdamStep;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> moment1: array<f32>;
@group(0) @binding(4) var<storage, read_write> moment2: array<f32>;
// Each parameter group's first index, ascending (hash levels, MLP layers, background).
@group(0) @binding(5) var<storage, read> group_starts: array<u32>;
// Per group: parameters this step left non-finite.
@group(0) @binding(6) var<storage, read_write> nonfinite: array<atomic<u32>>;

// Exponent all ones: ±inf or NaN (a bit test, which no fast-math assumption can fold away).
fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * step.groups_x * 256u;
    if i >= step.len {
        return;
    }
    let lr = select(step.lr_mlp, step.lr_grid, i < step.grid_params);
    let g = grads[i];
    grads[i] = 0.0;
    let m = step.beta1 * moment1[i] + (1.0 - step.beta1) * g;
    let v = step.beta2 * moment2[i] + (1.0 - step.beta2) * g * g;
    moment1[i] = m;
    moment2[i] = v;
    let p = params[i] * (1.0 - lr * step.weight_decay);
    let denom = sqrt(v / step.bias_correction2) + step.eps;
    let updated = p - lr * (m / step.bias_correction1) / denom;
    params[i] = updated;
    if !is_finite(updated) {
        var group = 0u;
        while group + 1u < arrayLength(&group_starts) && group_starts[group + 1u] <= i {
            group++;
        }
        atomicAdd(&nonfinite[group], 1u);
    }
}
