//! Exclusive prefix sums over u32 buffers on the GPU, and indirect dispatch sizes from a total
//! the GPU computed (`shaders/scan.wgsl`): a step's sample lists are laid out without the host.

use super::buffers::{dispatch_size, storage, uniform};
use super::launch::{Groups, Kernel, Launches};
use super::GpuContext;
use crate::error::Result;
use bytemuck::{Pod, Zeroable};

/// Values one workgroup scans (THREADS × PER_THREAD in the shader).
pub const SCAN_BLOCK: u32 = 1024;

/// `ScanWork` in `shaders/scan.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ScanUniform {
    pub len: u32,
    pub pad: [u32; 3],
}

/// `DispatchWork` in `shaders/scan.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct DispatchUniform {
    /// Index of the total in its buffer.
    pub at: u32,
    /// At most this many items (a buffer's capacity).
    pub limit: u32,
    pub per_group: u32,
    pub pad: u32,
}

pub struct ScanKernels {
    scan_blocks: Kernel,
    add_block_sums: Kernel,
    dispatch_args: Kernel,
}

impl ScanKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let source = super::shader::SCAN;
        Ok(Self {
            scan_blocks: Kernel::new(ctx, "scan_blocks", source, "scan_blocks")?,
            add_block_sums: Kernel::new(ctx, "add_block_sums", source, "add_block_sums")?,
            dispatch_args: Kernel::new(ctx, "dispatch_args", source, "dispatch_args")?,
        })
    }

    /// Records the indirect arguments of a dispatch over `min(totals[at], limit)` items.
    pub fn record_dispatch_args(
        &self,
        launches: &mut Launches,
        work: &wgpu::Buffer,
        totals: &wgpu::Buffer,
        args: &wgpu::Buffer,
    ) {
        launches.launch(
            &self.dispatch_args,
            &[(3, work), (4, totals), (5, args)],
            Groups::Grid((1, 1)),
        );
    }
}

/// One level of a scan: its length and its blocks' totals.
struct Level {
    work: wgpu::Buffer,
    sums: wgpu::Buffer,
    blocks: u32,
}

/// The scratch a scan of `len` values needs, kept across launches (a step allocates nothing).
pub struct PrefixSum {
    pub len: u32,
    levels: Vec<Level>,
}

impl PrefixSum {
    pub fn new(ctx: &GpuContext, len: u32) -> Self {
        let mut levels = vec![];
        let mut n = len.max(1);
        loop {
            let blocks = n.div_ceil(SCAN_BLOCK);
            levels.push(Level {
                work: uniform(
                    ctx,
                    "scan",
                    &ScanUniform {
                        len: n,
                        pad: [0; 3],
                    },
                ),
                sums: storage(ctx, "scan block sums", 4 * blocks as u64),
                blocks,
            });
            if blocks == 1 {
                break;
            }
            n = blocks;
        }
        Self { len, levels }
    }

    /// Records the exclusive prefix sum of the first `len` values of `data`, in place.
    pub fn record(&self, kernels: &ScanKernels, launches: &mut Launches, data: &wgpu::Buffer) {
        self.record_level(kernels, launches, 0, data);
    }

    fn record_level(
        &self,
        kernels: &ScanKernels,
        launches: &mut Launches,
        i: usize,
        data: &wgpu::Buffer,
    ) {
        let level = &self.levels[i];
        let bindings = [(0, &level.work), (1, data), (2, &level.sums)];
        let groups = Groups::Grid(dispatch_size(level.blocks));
        launches.launch(&kernels.scan_blocks, &bindings, groups);
        if level.blocks > 1 {
            self.record_level(kernels, launches, i + 1, &level.sums);
            launches.launch(&kernels.add_block_sums, &bindings, groups);
        }
    }
}
