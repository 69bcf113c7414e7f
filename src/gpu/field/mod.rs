//! The field on the GPU: its parameters and AdamW state (here), rendering over packed samples
//! (`render`), back-propagating image gradients into parameter gradients (`backward`), the
//! optimiser step (`optimizer`), the occupancy grid (`occupancy`), and checkpoints and queries
//! (`io`). Buffers live across steps; kernels are launched through [`super::launch`].

mod backward;
mod io;
mod occupancy;
mod optimizer;
mod render;

pub use optimizer::AdamConfig;
pub use render::{ChunkPlan, Rendered};

use super::buffers::{download, storage, storage_with, uniform, Readback};
use super::launch::Kernel;
use super::scan::ScanKernels;
use super::shader::{HiddenSum, Sources};
use super::GpuContext;
use crate::error::{Error, Result};
use crate::field::march::OCCUPANCY_RESOLUTION;
use crate::field::{Background, FieldConfig, OccupancyGrid, ParamLayout};
use bytemuck::{Pod, Zeroable};
use std::sync::Arc;

/// `Frame` in `shaders/common.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct FrameUniform {
    pub rays: u32,
    pub width: u32,
    pub height: u32,
    pub samples_per_ray: u32,
    pub early_stop: f32,
    pub jitter_seed: u32,
    pub stratified: u32,
    pub use_occupancy: u32,
    pub background: [f32; 4],
}

/// `Camera` in `shaders/common.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct CameraUniform {
    pub rows: [[f32; 4]; 3],
    /// Focal length in pixels, width, height, unused.
    pub intrinsics: [f32; 4],
}

/// `Chunk` in `shaders/render.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ChunkUniform {
    pub first_ray: u32,
    pub rays: u32,
    pub capacity: u32,
    pub pad: u32,
}

/// `Work` in `shaders/field_backward.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct WorkUniform {
    /// Index of the sample count in the totals buffer.
    pub at: u32,
    pub pad: [u32; 3],
}

/// `AdamStep` in `shaders/adam.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct AdamUniform {
    pub len: u32,
    pub grid_params: u32,
    pub lr_grid: f32,
    pub lr_mlp: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub bias_correction1: f32,
    pub bias_correction2: f32,
    pub groups_x: u32,
    pub pad: u32,
}

/// `OccupancyWork` in `shaders/occupancy.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct OccupancyUniform {
    pub seed: u32,
    pub step_size: f32,
    pub pad: [u32; 2],
}

/// `Query` in `shaders/field_query.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct QueryUniform {
    pub count: u32,
    pub first: u32,
    pub groups_x: u32,
    pub skip_empty: u32,
    pub origin: [f32; 4],
    pub step: [f32; 4],
}

/// Every kernel of the field.
struct Kernels {
    count_samples: Kernel,
    write_samples: Kernel,
    eval_samples: Kernel,
    composite: Kernel,
    composite_backward: Kernel,
    field_backward: Kernel,
    /// Only for a neural background.
    background_backward: Option<Kernel>,
    adam: Kernel,
    occupancy_values: Kernel,
    grid_density: Kernel,
    point_query: Kernel,
    scan: ScanKernels,
}

impl Kernels {
    fn new(ctx: &GpuContext, config: &FieldConfig) -> Result<Self> {
        let hidden_sum = HiddenSum::choose(config, ctx.subgroup_min_size, ctx.max_workgroup_memory);
        let sources = Sources::new(config, ctx.float_atomics, hidden_sum);
        let build = |label: &str, source: &str| {
            Kernel::new(ctx, label, source, label).map_err(|e| {
                Error::Gpu(format!(
                    "{e}\n(field: {} levels, hidden width {}; a smaller field needs less workgroup memory and fewer threads per workgroup)",
                    config.levels, config.hidden
                ))
            })
        };
        let neural = matches!(config.background, Background::Neural { .. });
        Ok(Self {
            count_samples: build("count_samples", &sources.render)?,
            write_samples: build("write_samples", &sources.render)?,
            eval_samples: build("eval_samples", &sources.render)?,
            composite: build("composite", &sources.render)?,
            composite_backward: build("composite_backward", &sources.render)?,
            field_backward: build("field_backward", &sources.field_backward)?,
            background_backward: neural
                .then(|| build("background_backward", &sources.background_backward))
                .transpose()?,
            adam: build("adam", &sources.adam)?,
            occupancy_values: build("occupancy_values", &sources.occupancy)?,
            grid_density: build("grid_density", &sources.query)?,
            point_query: build("point_query", &sources.query)?,
            scan: ScanKernels::new(ctx)?,
        })
    }
}

pub struct GpuField {
    pub ctx: Arc<GpuContext>,
    pub config: FieldConfig,
    pub layout: ParamLayout,
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    moment1: wgpu::Buffer,
    moment2: wgpu::Buffer,
    levels: wgpu::Buffer,
    occupancy_bits: wgpu::Buffer,
    pub occupancy: OccupancyGrid,
    /// Skip empty cells when rendering (off until the grid has been updated).
    pub use_occupancy: bool,
    /// AdamW steps taken.
    pub step: u64,
    kernels: Kernels,
    /// Render buffers and the last render's layout, kept for its backward pass.
    frames: render::FrameState,
    /// Buffers of the optimiser step and the occupancy refresh, and the staging buffer of
    /// every download a step makes: kept, so that a step allocates no buffer.
    adam_uniform: wgpu::Buffer,
    /// Each parameter group's first index, and the non-finite parameters AdamW left in each.
    group_starts: wgpu::Buffer,
    nonfinite: wgpu::Buffer,
    occupancy_work: wgpu::Buffer,
    occupancy_values: wgpu::Buffer,
    readback: Readback,
}

impl GpuField {
    pub fn new(ctx: Arc<GpuContext>, config: FieldConfig, params: &[f32]) -> Result<Self> {
        config.validate()?;
        let layout = config.layout();
        if params.len() != layout.len as usize {
            return Err(Error::Input(format!(
                "field has {} parameters, got {}",
                layout.len,
                params.len()
            )));
        }
        let bytes = 4 * layout.len as u64;
        if bytes > ctx.max_binding {
            return Err(Error::Gpu(format!(
                "the field's {} parameters ({bytes} bytes) exceed the device's largest storage binding ({} bytes): lower log2_table_size",
                layout.len, ctx.max_binding
            )));
        }
        let level_data: Vec<[u32; 4]> = layout
            .levels
            .iter()
            .map(|l| [l.resolution, l.size, l.offset, u32::from(l.dense)])
            .collect();
        let group_starts: Vec<u32> = layout.groups().iter().map(|(_, r)| r.start).collect();
        let occupancy = OccupancyGrid::default();
        let field = Self {
            kernels: Kernels::new(&ctx, &config)?,
            params: storage_with(&ctx, "params", params),
            grads: storage(&ctx, "grads", bytes),
            moment1: storage(&ctx, "adam m", bytes),
            moment2: storage(&ctx, "adam v", bytes),
            levels: storage_with(&ctx, "levels", &level_data),
            occupancy_bits: storage_with(&ctx, "occupancy", &occupancy.bits),
            occupancy,
            use_occupancy: false,
            step: 0,
            frames: render::FrameState::default(),
            adam_uniform: uniform(&ctx, "adam step", &AdamUniform::zeroed()),
            group_starts: storage_with(&ctx, "parameter groups", &group_starts),
            nonfinite: storage(&ctx, "non-finite parameters", 4 * group_starts.len() as u64),
            occupancy_work: uniform(&ctx, "occupancy work", &OccupancyUniform::zeroed()),
            occupancy_values: storage(
                &ctx,
                "occupancy values",
                4 * OCCUPANCY_RESOLUTION.pow(3) as u64,
            ),
            readback: Readback::default(),
            config,
            layout,
            ctx,
        };
        field.reset_optimizer();
        Ok(field)
    }

    /// Zeroes the gradients and the AdamW moments.
    pub fn reset_optimizer(&self) {
        let mut launches = super::launch::Launches::new(&self.ctx);
        for b in [&self.grads, &self.moment1, &self.moment2] {
            launches.clear(b);
        }
        launches.submit();
    }

    pub fn params(&self) -> Result<Vec<f32>> {
        download(&self.ctx, &self.params, self.layout.len as usize)
    }

    pub fn set_params(&self, params: &[f32]) {
        self.ctx
            .queue
            .write_buffer(&self.params, 0, bytemuck::cast_slice(params));
    }

    /// The accumulated gradient of every parameter.
    pub fn grads(&self) -> Result<Vec<f32>> {
        download(&self.ctx, &self.grads, self.layout.len as usize)
    }

    /// AdamW moments (first, second), for checkpoints.
    pub fn moments(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let n = self.layout.len as usize;
        Ok((
            download(&self.ctx, &self.moment1, n)?,
            download(&self.ctx, &self.moment2, n)?,
        ))
    }

    pub fn set_moments(&self, m: &[f32], v: &[f32]) {
        self.ctx
            .queue
            .write_buffer(&self.moment1, 0, bytemuck::cast_slice(m));
        self.ctx
            .queue
            .write_buffer(&self.moment2, 0, bytemuck::cast_slice(v));
    }
}
