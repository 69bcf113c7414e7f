//! The occupancy grid's refresh: σ·δ at a random point of every cell on the GPU
//! (`shaders/occupancy.wgsl`), blended and thresholded on the host ([`OccupancyGrid::update`]).

use super::{GpuField, OccupancyUniform};
use crate::error::Result;
use crate::field::march::{render_step, OCCUPANCY_RESOLUTION};
use crate::gpu::buffers::values_of;
use crate::gpu::launch::{launch_once, Groups};

impl GpuField {
    /// Re-evaluates the occupancy grid in the `chosen` cells, all when `None` (σ·step at a
    /// random point per cell, blended into the moving average with `decay`; see
    /// [`crate::field::OccupancyGrid::update`]) and turns skipping on.
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
        let work = OccupancyUniform {
            seed,
            step_size: render_step(self.config.radius as f64, samples_per_ray) as f32,
            pad: [0; 2],
        };
        ctx.queue
            .write_buffer(&self.occupancy_work, 0, bytemuck::bytes_of(&work));
        launch_once(
            ctx,
            &self.kernels.occupancy_values,
            &[
                (0, &self.occupancy_work),
                (1, &self.params),
                (2, &self.levels),
                (3, &self.occupancy_values),
            ],
            Groups::Grid((cells.div_ceil(64), 1)),
        );
        let data = self
            .readback
            .read(ctx, &[(&self.occupancy_values, 0, 4 * cells as u64)])?;
        let fresh: Vec<f32> = values_of(&data[0]);
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
