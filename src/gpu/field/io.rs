//! The field outside rendering: density grids and point queries (mesh export), and checkpoints
//! (parameters, AdamW state and occupancy grid in one safetensors file, written atomically).

use super::{GpuField, QueryUniform};
use crate::error::{Error, Result};
use crate::field::march::OCCUPANCY_RESOLUTION;
use crate::field::{FieldConfig, OccupancyGrid};
use crate::gpu::buffers::{dispatch_size, download, storage, storage_with, uniform};
use crate::gpu::launch::{launch_once, Groups};
use crate::gpu::GpuContext;
use std::sync::Arc;

/// Grid points evaluated per dispatch when sampling density for export.
const GRID_SLAB: u64 = 1 << 24;

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
            launch_once(
                ctx,
                &self.kernels.grid_density,
                &[
                    (0, &query),
                    (1, &self.params),
                    (2, &self.levels),
                    (3, &density),
                    (6, &self.occupancy_bits),
                ],
                Groups::Grid(groups),
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
        launch_once(
            ctx,
            &self.kernels.point_query,
            &[
                (0, &query),
                (1, &self.params),
                (2, &self.levels),
                (4, &input),
                (5, &values),
            ],
            Groups::Grid(groups),
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
