// Evaluating the field outside rendering (mesh export): density on a regular grid, and density
// and albedo at given points. Grid points in cells the occupancy grid marks empty read 0, as
// the renderer sees them, which spares most of the work for a trained object.

struct Query {
    // Grid points per side (grid_density) or number of points (point_query).
    count: u32,
    // First grid point of this dispatch (the grid is evaluated in slabs).
    first: u32,
    groups_x: u32,
    // 1: grid points in empty occupancy cells are 0 without evaluating the field.
    skip_empty: u32,
    // Grid corner and spacing.
    origin: vec4<f32>,
    step: vec4<f32>,
}

@group(0) @binding(0) var<uniform> query: Query;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read> levels: array<Level>;
@group(0) @binding(3) var<storage, read_write> density: array<f32>;
@group(0) @binding(4) var<storage, read> points: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> values: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> occupancy: array<u32>;

fn invocation(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * query.groups_x * 64u;
}

@compute @workgroup_size(64)
fn grid_density(@builtin(global_invocation_id) gid: vec3<u32>) {
    let local = invocation(gid);
    let n = query.count;
    let i = query.first + local;
    if i >= n * n * n || local >= arrayLength(&density) {
        return;
    }
    let c = vec3<f32>(f32(i % n), f32((i / n) % n), f32(i / (n * n)));
    let p = query.origin.xyz + c * query.step.xyz;
    if query.skip_empty == 1u && occupancy[occupancy_cell(p)] == 0u {
        density[local] = 0.0;
        return;
    }
    density[local] = eval_density(p);
}

@compute @workgroup_size(64)
fn point_query(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = invocation(gid);
    if i >= query.count {
        return;
    }
    let v = eval_field(points[i].xyz);
    values[i] = vec4<f32>(v.rgb, v.sigma);
}
