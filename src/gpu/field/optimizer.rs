//! AdamW on the field's parameters (`shaders/adam.wgsl`), two learning-rate groups, with a
//! check that every parameter came out finite.

use super::{AdamUniform, GpuField};
use crate::error::{Error, Result};
use crate::gpu::buffers::{dispatch_size, values_of};
use crate::gpu::launch::{Groups, Launches};

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
    /// One AdamW step from the accumulated gradients, which it clears. A parameter left
    /// non-finite is an [`Error::NonFiniteField`] naming its groups: the field is then unusable
    /// (its last checkpoint is what to keep).
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
        let mut launches = Launches::new(ctx);
        launches.clear(&self.nonfinite);
        launches.launch(
            &self.kernels.adam,
            &[
                (0, &self.adam_uniform),
                (1, &self.params),
                (2, &self.grads),
                (3, &self.moment1),
                (4, &self.moment2),
                (5, &self.group_starts),
                (6, &self.nonfinite),
            ],
            Groups::Grid(groups),
        );
        launches.submit();
        let groups = self.layout.groups();
        let bytes = 4 * groups.len() as u64;
        let counts: Vec<u32> = values_of(
            &self
                .readback
                .read(&self.ctx, &[(&self.nonfinite, 0, bytes)])?[0],
        );
        let bad: Vec<String> = groups
            .iter()
            .zip(&counts)
            .filter(|(_, &n)| n > 0)
            .map(|((name, range), n)| format!("{name}: {n} of {}", range.len()))
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(Error::NonFiniteField {
                step: self.step - 1,
                groups: bad.join(", "),
            })
        }
    }
}
