//! Back-propagation of image gradients into the field's parameter gradients, from what the
//! last render kept: the neural background's weights from the colours alone, then per chunk the
//! per-sample gradients (`composite_backward`) and the field's (`field_backward.wgsl`).

use super::GpuField;
use crate::error::{Error, Result};
use crate::gpu::buffers::dispatch_size;
use crate::gpu::launch::{Groups, Launches};

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
