//! Back-propagation into the field's parameter gradients: of image gradients, from what the
//! last render kept (the neural background's weights from the colours alone, then per chunk the
//! per-sample gradients, `composite_backward`, and the field's, `field_backward.wgsl`); and of
//! albedo gradients at given points (the mesh stage's texture, queried at surface points),
//! through the same `field_backward`.

use super::render::SAMPLES_PER_BACKWARD_GROUP;
use super::{GpuField, WorkUniform};
use crate::error::{Error, Result};
use crate::gpu::buffers::{dispatch_size, storage_with, uniform};
use crate::gpu::launch::{launch_once, Groups, Launches};

impl GpuField {
    /// Adds to the parameter gradients the gradient of Σ grad·(rgb, opacity) over the pixels of
    /// the last render.
    pub fn backward(&mut self, grad_color: &[[f32; 4]]) -> Result<()> {
        let last = self.last_render()?;
        let rays = last.frame.rays;
        if grad_color.len() != rays as usize {
            return Err(Error::Input(format!(
                "backward: {} pixel gradients for a render of {rays} pixels",
                grad_color.len()
            )));
        }
        let overridden = last.frame.background[3] == 1.0;
        let ctx = self.ctx.clone();
        let [frame, cameras, color, grad_buffer] = self.frame_buffers();
        ctx.queue
            .write_buffer(grad_buffer, 0, bytemuck::cast_slice(grad_color));
        let mut launches = Launches::new(&ctx);
        if let Some(kernel) = self
            .kernels
            .background_backward
            .as_ref()
            .filter(|_| !overridden)
        {
            launches.launch(
                kernel,
                &[
                    (0, frame),
                    (1, cameras),
                    (2, &self.params),
                    (3, color),
                    (4, &self.grads),
                    (5, grad_buffer),
                ],
                Groups::Grid(dispatch_size(rays.div_ceil(256))),
            );
        }
        self.record_chunk_backwards(&mut launches);
        launches.submit();
        ctx.wait()
    }
}

impl GpuField {
    /// Adds to the parameter gradients the gradient of Σ grad·albedo(point) over `points`,
    /// where the field's albedo is `albedo` (as [`GpuField::query`] gave it: the sigmoid's
    /// derivative comes from it). Density gets none: the geometry is held elsewhere.
    pub fn albedo_backward(
        &mut self,
        points: &[[f32; 3]],
        albedo: &[[f32; 3]],
        grad_albedo: &[[f32; 3]],
    ) -> Result<()> {
        if grad_albedo.len() != points.len() || albedo.len() != points.len() {
            return Err(Error::Input(format!(
                "albedo backward: {} gradients and {} albedo values for {} points",
                grad_albedo.len(),
                albedo.len(),
                points.len()
            )));
        }
        if points.is_empty() {
            return Ok(());
        }
        // `SampleGrad` of field_backward.wgsl: (position, dL/d raw density = 0) and dL/d(albedo
        // pre-activation) = g·a(1 − a) through the sigmoid.
        let records: Vec<[f32; 8]> = points
            .iter()
            .zip(grad_albedo)
            .zip(albedo)
            .map(|((p, g), a)| {
                let pre = |k: usize| g[k] * a[k] * (1.0 - a[k]);
                [p[0], p[1], p[2], 0.0, pre(0), pre(1), pre(2), 0.0]
            })
            .collect();
        let ctx = &self.ctx;
        let count = points.len() as u32;
        let work = uniform(
            ctx,
            "albedo backward work",
            &WorkUniform { at: 0, pad: [0; 3] },
        );
        let grads_in = storage_with(ctx, "albedo sample grads", &records);
        let totals = storage_with(ctx, "albedo sample count", &[count]);
        launch_once(
            ctx,
            &self.kernels.field_backward,
            &[
                (0, &work),
                (1, &self.params),
                (2, &self.levels),
                (3, &grads_in),
                (4, &self.grads),
                (5, &totals),
            ],
            Groups::Grid(dispatch_size(count.div_ceil(SAMPLES_PER_BACKWARD_GROUP))),
        );
        ctx.wait()
    }
}
