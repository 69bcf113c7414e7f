//! AdamW on the field's parameters (`shaders/adam.wgsl`), two learning-rate groups.

use super::{AdamUniform, GpuField};
use crate::error::Result;
use crate::gpu::buffers::dispatch_size;
use crate::gpu::launch::{launch_once, Groups};

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

impl GpuField {
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
        ctx.queue
            .write_buffer(&self.adam_uniform, 0, bytemuck::bytes_of(&step));
        launch_once(
            ctx,
            &self.kernels.adam,
            &[
                (0, &self.adam_uniform),
                (1, &self.params),
                (2, &self.grads),
                (3, &self.moment1),
                (4, &self.moment2),
            ],
            Groups::Grid(groups),
        );
        ctx.wait()
    }
}
