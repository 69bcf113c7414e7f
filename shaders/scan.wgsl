// Exclusive prefix sums of u32 values on the GPU, and the workgroup counts of dispatches sized
// by a total that only the GPU knows (indirect dispatch: nothing goes back to the host).
//
// scan_blocks scans each block of BLOCK values in place and writes the block's total to
// `block_sums`; the host scans those the same way (recursively) and add_block_sums adds each
// block's exclusive total to its values.

// Padded to 16 bytes on the host.
struct ScanWork {
    len: u32,
}

@group(0) @binding(0) var<uniform> work: ScanWork;
@group(0) @binding(1) var<storage, read_write> data: array<u32>;
@group(0) @binding(2) var<storage, read_write> block_sums: array<u32>;

const THREADS: u32 = 256u;
const PER_THREAD: u32 = 4u;
const BLOCK: u32 = THREADS * PER_THREAD;

var<workgroup> partial: array<u32, THREADS>;

fn block_index(wg: vec3<u32>, groups: vec3<u32>) -> u32 {
    return wg.x + wg.y * groups.x;
}

@compute @workgroup_size(256)
fn scan_blocks(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let block = block_index(wg, groups);
    let base = block * BLOCK + t * PER_THREAD;
    // Each thread's values, scanned serially.
    var before: array<u32, PER_THREAD>;
    var sum = 0u;
    for (var k = 0u; k < PER_THREAD; k++) {
        before[k] = sum;
        if base + k < work.len {
            sum += data[base + k];
        }
    }
    // Inclusive scan of the threads' sums (Hillis–Steele).
    partial[t] = sum;
    workgroupBarrier();
    for (var step = 1u; step < THREADS; step *= 2u) {
        var add = 0u;
        if t >= step {
            add = partial[t - step];
        }
        workgroupBarrier();
        partial[t] += add;
        workgroupBarrier();
    }
    let exclusive = partial[t] - sum;
    for (var k = 0u; k < PER_THREAD; k++) {
        if base + k < work.len {
            data[base + k] = exclusive + before[k];
        }
    }
    if t == THREADS - 1u {
        block_sums[block] = partial[t];
    }
}

@compute @workgroup_size(256)
fn add_block_sums(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let block = block_index(wg, groups);
    let add = block_sums[block];
    let base = block * BLOCK + t * PER_THREAD;
    for (var k = 0u; k < PER_THREAD; k++) {
        if base + k < work.len {
            data[base + k] += add;
        }
    }
}

// Workgroups for `min(totals[at], limit)` items at `per_group` items per workgroup, as a 2-D
// grid of at most 65 535 along x, written as indirect dispatch arguments.
struct DispatchWork {
    at: u32,
    limit: u32,
    per_group: u32,
    _pad: u32,
}

@group(0) @binding(3) var<uniform> dispatch: DispatchWork;
@group(0) @binding(4) var<storage, read> totals: array<u32>;
@group(0) @binding(5) var<storage, read_write> args: array<u32>;

@compute @workgroup_size(1)
fn dispatch_args() {
    let items = min(totals[dispatch.at], dispatch.limit);
    let needed = max((items + dispatch.per_group - 1u) / dispatch.per_group, 1u);
    let x = min(needed, 65535u);
    args[0] = x;
    args[1] = (needed + x - 1u) / x;
    args[2] = 1u;
}
