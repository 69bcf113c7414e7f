// Fresh occupancy values for the occupancy grid: σ·δ at a random point of every cell (the
// host blends them into its moving average and thresholds them).

struct OccupancyWork {
    seed: u32,
    step_size: f32,
    _pad: vec2<u32>,
}

@group(0) @binding(0) var<uniform> work: OccupancyWork;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read> levels: array<Level>;
@group(0) @binding(3) var<storage, read_write> values: array<f32>;

@compute @workgroup_size(64)
fn occupancy_values(@builtin(global_invocation_id) gid: vec3<u32>) {
    let cell = gid.x;
    if cell >= OCC_RES * OCC_RES * OCC_RES {
        return;
    }
    let c = vec3<u32>(cell % OCC_RES, (cell / OCC_RES) % OCC_RES, cell / (OCC_RES * OCC_RES));
    let h = pcg_hash(cell ^ pcg_hash(work.seed));
    let r = vec3<f32>(f32(h & 1023u), f32((h >> 10u) & 1023u), f32((h >> 20u) & 1023u)) / 1024.0;
    let p = ((vec3<f32>(c) + r) / f32(OCC_RES) * 2.0 - 1.0) * RADIUS;
    values[cell] = eval_density(p) * work.step_size;
}
