//! The field on the GPU: its parameters and AdamW state, rendering a batch of cameras,
//! back-propagating image gradients into parameter gradients, the optimiser step and the
//! occupancy grid.

use super::buffers::{dispatch_size, download, pipeline, run, storage, storage_with, uniform};
use super::shader::Sources;
use super::GpuContext;
use crate::camera::Camera;
use crate::error::{Error, Result};
use crate::field::march::{pcg_hash, OCCUPANCY_RESOLUTION};
use crate::field::{Background, FieldConfig, OccupancyGrid, ParamLayout, RenderSettings};
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

/// `Work` in `shaders/field_backward.wgsl` (padded to 16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct WorkUniform {
    pub samples: u32,
    pub groups_x: u32,
    pub pad: [u32; 2],
}

/// `RayChunk` in `shaders/render.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct RayChunkUniform {
    pub first_ray: u32,
    pub rays: u32,
    pub first_sample: u32,
    pub pad: u32,
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

/// Grid points evaluated per dispatch when sampling density for export.
const GRID_SLAB: u64 = 1 << 24;

/// `SampleGrad` in `shaders/render.wgsl`: 8 floats.
const SAMPLE_GRAD_BYTES: u64 = 32;
/// Samples per `field_backward` workgroup (TILE × TILES_PER_GROUP in the shader).
const SAMPLES_PER_GROUP: u32 = 256;

/// AdamW hyper-parameters (threestudio's `mvdream-sd21.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    pub lr_grid: f64,
    pub lr_mlp: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr_grid: 1e-2,
            lr_mlp: 1e-3,
            betas: [0.9, 0.99],
            eps: 1e-15,
            weight_decay: 1e-2,
        }
    }
}

/// What a batch of cameras rendered to, per pixel, view-major then row-major.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// rgb over the background, opacity.
    pub color: Vec<[f32; 4]>,
    pub depth: Vec<f32>,
}

struct Pipelines {
    render: wgpu::ComputePipeline,
    ray_backward: wgpu::ComputePipeline,
    field_backward: wgpu::ComputePipeline,
    adam: wgpu::ComputePipeline,
    occupancy: wgpu::ComputePipeline,
    /// Only for a neural background.
    background_backward: Option<wgpu::ComputePipeline>,
    grid_density: wgpu::ComputePipeline,
    point_query: wgpu::ComputePipeline,
}

/// The last render, kept for its backward pass.
struct LastRender {
    frame: FrameUniform,
    cameras: wgpu::Buffer,
    color: wgpu::Buffer,
    /// Samples each ray used (read back only when a backward pass needs them).
    counts: wgpu::Buffer,
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
    pipelines: Pipelines,
    last: Option<LastRender>,
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
        let sources = Sources::new(&config, ctx.float_atomics);
        let build = |label: &str, source: &str, entry: &str| {
            pipeline(&ctx, label, source, entry).map_err(|e| {
                Error::Gpu(format!(
                    "{e}\n(field: {} levels, hidden width {}; a smaller field needs less workgroup memory and fewer threads per workgroup)",
                    config.levels, config.hidden
                ))
            })
        };
        let neural = matches!(config.background, Background::Neural { .. });
        let pipelines = Pipelines {
            render: build("render", &sources.render, "render")?,
            ray_backward: build("ray_backward", &sources.render, "ray_backward")?,
            field_backward: build("field_backward", &sources.field_backward, "field_backward")?,
            adam: build("adam", &sources.adam, "adam")?,
            occupancy: build("occupancy", &sources.occupancy, "occupancy_values")?,
            grid_density: build("grid_density", &sources.query, "grid_density")?,
            point_query: build("point_query", &sources.query, "point_query")?,
            background_backward: if neural {
                Some(build(
                    "background_backward",
                    &sources.background_backward,
                    "background_backward",
                )?)
            } else {
                None
            },
        };
        let level_data: Vec<[u32; 4]> = layout
            .levels
            .iter()
            .map(|l| [l.resolution, l.size, l.offset, u32::from(l.dense)])
            .collect();
        let occupancy = OccupancyGrid::default();
        let field = Self {
            params: storage_with(&ctx, "params", params),
            grads: storage(&ctx, "grads", bytes),
            moment1: storage(&ctx, "adam m", bytes),
            moment2: storage(&ctx, "adam v", bytes),
            levels: storage_with(&ctx, "levels", &level_data),
            occupancy_bits: storage_with(&ctx, "occupancy", &occupancy.bits),
            occupancy,
            use_occupancy: false,
            step: 0,
            pipelines,
            last: None,
            config,
            layout,
            ctx,
        };
        field.reset_optimizer();
        Ok(field)
    }

    /// Zeroes the gradients and the AdamW moments.
    pub fn reset_optimizer(&self) {
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        for b in [&self.grads, &self.moment1, &self.moment2] {
            encoder.clear_buffer(b, 0, None);
        }
        self.ctx.queue.submit([encoder.finish()]);
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

    fn background(&self) -> [f32; 4] {
        match self.config.background {
            Background::Solid([r, g, b]) => [r, g, b, 0.0],
            Background::Neural { .. } => [0.0; 4],
        }
    }

    /// Renders `cameras` at width × height and keeps what the backward pass needs.
    pub fn render(
        &mut self,
        cameras: &[Camera],
        width: u32,
        height: u32,
        settings: &RenderSettings,
    ) -> Result<Rendered> {
        let rays = cameras.len() as u32 * width * height;
        let frame = FrameUniform {
            rays,
            width,
            height,
            samples_per_ray: settings.samples_per_ray,
            early_stop: settings.early_stop,
            jitter_seed: settings.stratified_seed.map_or(0, pcg_hash),
            stratified: u32::from(settings.stratified_seed.is_some()),
            use_occupancy: u32::from(self.use_occupancy),
            background: match settings.background {
                Some([r, g, b]) => [r, g, b, 1.0],
                None => self.background(),
            },
        };
        let camera_data: Vec<CameraUniform> = cameras
            .iter()
            .map(|c| CameraUniform {
                rows: std::array::from_fn(|r| std::array::from_fn(|k| c.c2w[(r, k)] as f32)),
                intrinsics: [c.focal(height) as f32, width as f32, height as f32, 0.0],
            })
            .collect();
        let ctx = &self.ctx;
        let last = LastRender {
            frame,
            cameras: storage_with(ctx, "cameras", &camera_data),
            color: storage(ctx, "color", 16 * rays as u64),
            counts: storage(ctx, "sample counts", 4 * rays as u64),
        };
        let depth = storage(ctx, "depth", 4 * rays as u64);
        let frame_buffer = uniform(ctx, "frame", &frame);
        run(
            ctx,
            &self.pipelines.render,
            &[
                (0, &frame_buffer),
                (1, &last.cameras),
                (2, &self.params),
                (3, &self.levels),
                (4, &self.occupancy_bits),
                (5, &last.color),
                (6, &depth),
                (7, &last.counts),
            ],
            dispatch_size(rays.div_ceil(64)),
        );
        let rendered = Rendered {
            color: download(ctx, &last.color, rays as usize)?,
            depth: download(ctx, &depth, rays as usize)?,
        };
        self.last = Some(last);
        Ok(rendered)
    }

    /// The field samples each ray of the last render evaluated.
    pub fn last_sample_counts(&self) -> Result<Vec<u32>> {
        let last = self.last_render()?;
        download(&self.ctx, &last.counts, last.frame.rays as usize)
    }

    fn last_render(&self) -> Result<&LastRender> {
        self.last.as_ref().ok_or_else(|| {
            Error::Gpu(
                "nothing rendered yet: backward passes and sample counts follow a render".into(),
            )
        })
    }

    /// Adds to the parameter gradients the gradient of Σ grad·(rgb, opacity) over the pixels of
    /// the last render.
    pub fn backward(&mut self, grad_color: &[[f32; 4]]) -> Result<()> {
        let last = self.last_render()?;
        let rays = last.frame.rays as usize;
        if grad_color.len() != rays {
            return Err(Error::Input(format!(
                "backward: {} pixel gradients for a render of {rays} pixels",
                grad_color.len()
            )));
        }
        let ctx = &self.ctx;
        let frame_buffer = uniform(ctx, "frame", &last.frame);
        let grad_buffer = storage_with(ctx, "grad color", grad_color);
        let overridden = last.frame.background[3] == 1.0;
        if let Some(background) = self
            .pipelines
            .background_backward
            .as_ref()
            .filter(|_| !overridden)
        {
            run(
                ctx,
                background,
                &[
                    (0, &frame_buffer),
                    (1, &last.cameras),
                    (2, &self.params),
                    (3, &last.color),
                    (4, &self.grads),
                    (5, &grad_buffer),
                ],
                dispatch_size((rays as u32).div_ceil(256)),
            );
        }
        // Where each ray's samples go: the exclusive prefix sum of the forward counts.
        let counts = self.last_sample_counts()?;
        let mut offsets = Vec::with_capacity(rays);
        let mut total = 0u64;
        for &c in &counts {
            offsets.push(u32::try_from(total).map_err(|_| {
                Error::Gpu(format!("more than {} samples in one render", u32::MAX))
            })?);
            total += c as u64;
        }
        let chunks = ray_chunks(&counts, self.ctx.max_binding / SAMPLE_GRAD_BYTES);
        let largest = chunks.iter().map(|c| c.samples).max().unwrap_or(0);
        if largest == 0 {
            return ctx.wait();
        }
        let offsets_buffer = storage_with(ctx, "sample offsets", &offsets);
        let sample_grads = storage(ctx, "sample grads", largest * SAMPLE_GRAD_BYTES);
        for chunk in chunks {
            let range = uniform(
                ctx,
                "ray chunk",
                &RayChunkUniform {
                    first_ray: chunk.first_ray as u32,
                    rays: chunk.rays as u32,
                    first_sample: offsets[chunk.first_ray],
                    pad: 0,
                },
            );
            run(
                ctx,
                &self.pipelines.ray_backward,
                &[
                    (0, &frame_buffer),
                    (1, &last.cameras),
                    (2, &self.params),
                    (3, &self.levels),
                    (4, &self.occupancy_bits),
                    (5, &last.color),
                    (7, &offsets_buffer),
                    (8, &grad_buffer),
                    (9, &sample_grads),
                    (10, &range),
                ],
                dispatch_size((chunk.rays as u32).div_ceil(64)),
            );
            let groups = dispatch_size((chunk.samples as u32).div_ceil(SAMPLES_PER_GROUP));
            let work = uniform(
                ctx,
                "work",
                &WorkUniform {
                    samples: chunk.samples as u32,
                    groups_x: groups.0,
                    pad: [0; 2],
                },
            );
            run(
                ctx,
                &self.pipelines.field_backward,
                &[
                    (0, &work),
                    (1, &self.params),
                    (2, &self.levels),
                    (3, &sample_grads),
                    (4, &self.grads),
                ],
                groups,
            );
        }
        ctx.wait()
    }

    /// One AdamW step from the accumulated gradients, which it clears.
    pub fn adam_step(&mut self, adam: &AdamConfig) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let groups = dispatch_size(self.layout.len.div_ceil(256));
        let step = AdamUniform {
            len: self.layout.len,
            grid_params: self.layout.grid_params(),
            lr_grid: adam.lr_grid as f32,
            lr_mlp: adam.lr_mlp as f32,
            beta1: adam.betas[0] as f32,
            beta2: adam.betas[1] as f32,
            eps: adam.eps as f32,
            weight_decay: adam.weight_decay as f32,
            bias_correction1: (1.0 - adam.betas[0].powi(t)) as f32,
            bias_correction2: (1.0 - adam.betas[1].powi(t)) as f32,
            groups_x: groups.0,
            pad: 0,
        };
        let ctx = &self.ctx;
        let step_buffer = uniform(ctx, "adam step", &step);
        run(
            ctx,
            &self.pipelines.adam,
            &[
                (0, &step_buffer),
                (1, &self.params),
                (2, &self.grads),
                (3, &self.moment1),
                (4, &self.moment2),
            ],
            groups,
        );
        ctx.wait()
    }

    /// Re-evaluates the occupancy grid in the `chosen` cells, all when `None` (σ·step at a
    /// random point per cell, blended into the moving average with `decay`; see
    /// [`OccupancyGrid::update`]) and turns skipping on.
    pub fn update_occupancy(
        &mut self,
        seed: u32,
        samples_per_ray: u32,
        chosen: Option<&[bool]>,
        decay: f32,
        threshold: f32,
    ) -> Result<()> {
        let cells = OCCUPANCY_RESOLUTION.pow(3);
        let ctx = &self.ctx;
        let work = uniform(
            ctx,
            "occupancy work",
            &OccupancyUniform {
                seed,
                step_size: 2.0 * self.config.radius / samples_per_ray as f32,
                pad: [0; 2],
            },
        );
        let values = storage(ctx, "occupancy values", 4 * cells as u64);
        run(
            ctx,
            &self.pipelines.occupancy,
            &[
                (0, &work),
                (1, &self.params),
                (2, &self.levels),
                (3, &values),
            ],
            (cells.div_ceil(64), 1),
        );
        let fresh: Vec<f32> = download(ctx, &values, cells as usize)?;
        self.occupancy.update(&fresh, chosen, decay, threshold);
        ctx.queue.write_buffer(
            &self.occupancy_bits,
            0,
            bytemuck::cast_slice(&self.occupancy.bits),
        );
        self.use_occupancy = true;
        Ok(())
    }
}

impl GpuField {
    /// σ at n³ points spanning the field's box [−radius, radius]³ (x fastest, then y, z); 0 in
    /// cells the occupancy grid marks empty, once it is in use (as renders see the field).
    pub fn density_grid(&self, n: u32) -> Result<Vec<f32>> {
        let ctx = &self.ctx;
        let total = (n as u64).pow(3);
        let slab = GRID_SLAB.min(ctx.max_binding / 4);
        let r = self.config.radius;
        let step = 2.0 * r / (n.max(2) - 1) as f32;
        let mut out = Vec::with_capacity(total as usize);
        let mut first = 0u64;
        while first < total {
            let count = slab.min(total - first);
            let groups = dispatch_size((count as u32).div_ceil(64));
            let query = uniform(
                ctx,
                "grid query",
                &QueryUniform {
                    count: n,
                    first: first as u32,
                    groups_x: groups.0,
                    skip_empty: u32::from(self.use_occupancy),
                    origin: [-r, -r, -r, 0.0],
                    step: [step, step, step, 0.0],
                },
            );
            let density = storage(ctx, "density", 4 * count);
            run(
                ctx,
                &self.pipelines.grid_density,
                &[
                    (0, &query),
                    (1, &self.params),
                    (2, &self.levels),
                    (3, &density),
                    (6, &self.occupancy_bits),
                ],
                groups,
            );
            out.extend(download::<f32>(ctx, &density, count as usize)?);
            first += count;
        }
        Ok(out)
    }

    /// (rgb, σ) at world positions.
    pub fn query(&self, points: &[[f32; 3]]) -> Result<Vec<[f32; 4]>> {
        if points.is_empty() {
            return Ok(vec![]);
        }
        let ctx = &self.ctx;
        let padded: Vec<[f32; 4]> = points.iter().map(|p| [p[0], p[1], p[2], 0.0]).collect();
        let groups = dispatch_size((points.len() as u32).div_ceil(64));
        let query = uniform(
            ctx,
            "point query",
            &QueryUniform {
                count: points.len() as u32,
                first: 0,
                groups_x: groups.0,
                skip_empty: 0,
                origin: [0.0; 4],
                step: [0.0; 4],
            },
        );
        let input = storage_with(ctx, "points", &padded);
        let values = storage(ctx, "values", 16 * points.len() as u64);
        run(
            ctx,
            &self.pipelines.point_query,
            &[
                (0, &query),
                (1, &self.params),
                (2, &self.levels),
                (4, &input),
                (5, &values),
            ],
            groups,
        );
        download(ctx, &values, points.len())
    }
}

/// Identifies field checkpoints among safetensors files.
const CHECKPOINT_FORMAT: &str = "dream3d-field";

/// What a field checkpoint records besides its tensors.
#[derive(serde::Serialize, serde::Deserialize)]
struct CheckpointMeta {
    format: String,
    config: FieldConfig,
    step: u64,
    use_occupancy: bool,
}

impl GpuField {
    /// Writes parameters, AdamW state and occupancy grid atomically to one safetensors file.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        use candle_core::{Device, Tensor};
        let (m, v) = self.moments()?;
        let n = self.layout.len as usize;
        let vector = |data: Vec<f32>, len: usize| Tensor::from_vec(data, len, &Device::Cpu);
        let cells = self.occupancy.values.len();
        let tensors = [
            ("params", vector(self.params()?, n)?),
            ("adam_m", vector(m, n)?),
            ("adam_v", vector(v, n)?),
            (
                "occupancy_values",
                vector(self.occupancy.values.clone(), cells)?,
            ),
            (
                "occupancy_bits",
                Tensor::from_vec(self.occupancy.bits.clone(), cells, &Device::Cpu)?,
            ),
        ];
        let meta = CheckpointMeta {
            format: CHECKPOINT_FORMAT.into(),
            config: self.config.clone(),
            step: self.step,
            use_occupancy: self.use_occupancy,
        };
        let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, t)| (*k, t)).collect();
        crate::weights::save_atomic(
            path,
            &named,
            std::collections::HashMap::from([(
                "dream3d".to_string(),
                serde_json::to_string(&meta).expect("metadata serialises"),
            )]),
        )
    }

    /// A field as [`GpuField::save`] left it, optimiser state and occupancy grid included.
    pub fn load(ctx: Arc<GpuContext>, path: &std::path::Path) -> Result<Self> {
        let mut file = crate::weights::TensorFile::read(path, &candle_core::Device::Cpu)?;
        let meta: CheckpointMeta = file
            .metadata
            .get("dream3d")
            .and_then(|m| serde_json::from_str(m).ok())
            .filter(|m: &CheckpointMeta| m.format == CHECKPOINT_FORMAT)
            .ok_or_else(|| {
                Error::Input(format!(
                    "{}: not a dream3d field checkpoint",
                    path.display()
                ))
            })?;
        let n = meta.config.layout().len as usize;
        let cells = OCCUPANCY_RESOLUTION.pow(3) as usize;
        let mut take = |name: &str, len: usize| file.take(name, Some(&[len]));
        let params = take("params", n)?.to_vec1::<f32>()?;
        let m = take("adam_m", n)?.to_vec1::<f32>()?;
        let v = take("adam_v", n)?.to_vec1::<f32>()?;
        let values = take("occupancy_values", cells)?.to_vec1::<f32>()?;
        let bits = take("occupancy_bits", cells)?.to_vec1::<u32>()?;
        let mut field = Self::new(ctx, meta.config, &params)?;
        field.set_moments(&m, &v);
        field.step = meta.step;
        field.occupancy = OccupancyGrid { values, bits };
        field.ctx.queue.write_buffer(
            &field.occupancy_bits,
            0,
            bytemuck::cast_slice(&field.occupancy.bits),
        );
        field.use_occupancy = meta.use_occupancy;
        Ok(field)
    }
}

/// Consecutive rays whose samples fit one storage binding, for one backward dispatch each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RayChunk {
    pub first_ray: usize,
    pub rays: usize,
    pub samples: u64,
}

/// Splits rays with these sample counts into chunks of at most `max_samples` samples (a ray
/// never has more than its samples per ray, far below any device's binding size).
pub fn ray_chunks(counts: &[u32], max_samples: u64) -> Vec<RayChunk> {
    let mut chunks = vec![];
    let mut current = RayChunk {
        first_ray: 0,
        rays: 0,
        samples: 0,
    };
    for (i, &c) in counts.iter().enumerate() {
        if current.rays > 0 && current.samples + c as u64 > max_samples {
            chunks.push(current);
            current = RayChunk {
                first_ray: i,
                rays: 0,
                samples: 0,
            };
        }
        current.rays += 1;
        current.samples += c as u64;
    }
    if current.rays > 0 {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_ray_once_within_the_limit() {
        let counts = [5, 0, 7, 3, 3, 10, 1];
        let chunks = ray_chunks(&counts, 10);
        let spans: Vec<(usize, usize, u64)> = chunks
            .iter()
            .map(|c| (c.first_ray, c.rays, c.samples))
            .collect();
        assert_eq!(
            spans,
            [(0, 2, 5), (2, 2, 10), (4, 1, 3), (5, 1, 10), (6, 1, 1)]
        );
        assert_eq!(ray_chunks(&counts, 1000).len(), 1);
        assert!(ray_chunks(&[], 10).is_empty());
    }
}
