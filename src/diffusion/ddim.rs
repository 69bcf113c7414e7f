//! Deterministic DDIM sampling (η = 0) with classifier-free guidance.

use super::schedule::NoiseSchedule;
use crate::models::UNet2DConditionModel;
use candle_core::{Result as CResult, Tensor};

/// DDIM over a fixed set of inference timesteps.
pub struct DdimSampler {
    schedule: NoiseSchedule,
    timesteps: Vec<usize>,
}

impl DdimSampler {
    pub fn new(schedule: NoiseSchedule, steps: usize) -> Self {
        let timesteps = schedule.timesteps(steps);
        Self {
            schedule,
            timesteps,
        }
    }

    /// Descending timesteps, one per step.
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// One update from step `i`'s latents and model output to the next step's latents.
    pub fn step(&self, i: usize, x: &Tensor, model_output: &Tensor) -> CResult<Tensor> {
        let s = &self.schedule;
        let t = self.timesteps[i];
        let prev = t as i64 - (s.num_train_timesteps() / self.timesteps.len()) as i64;
        let alpha = s.alpha_cumprod(t as i64);
        let alpha_prev = s.alpha_cumprod(prev);
        let (x0, eps) = s.split_prediction(x, model_output, alpha)?;
        (x0 * alpha_prev.sqrt())? + (eps * (1.0 - alpha_prev).sqrt())?
    }
}

/// `uncond + w·(cond − uncond)` from a batch holding the unconditional half first.
pub fn apply_guidance(batched: &Tensor, guidance: f64) -> CResult<Tensor> {
    let half = batched.dim(0)? / 2;
    let uncond = batched.narrow(0, 0, half)?;
    let cond = batched.narrow(0, half, half)?;
    &uncond + ((cond - &uncond)? * guidance)?
}

/// Runs the whole DDIM loop from `latents` (B × C × h × w, already scaled by the initial noise
/// σ = 1) with classifier-free guidance: `uncond` and `cond` are B × N × D text states, and each
/// step evaluates both halves in one UNet call. `on_step(i)` is called after every step.
pub fn sample_with_guidance(
    unet: &UNet2DConditionModel,
    sampler: &DdimSampler,
    latents: &Tensor,
    uncond: &Tensor,
    cond: &Tensor,
    guidance: f64,
    on_step: impl FnMut(usize, &Tensor),
) -> CResult<Tensor> {
    let context = Tensor::cat(&[uncond, cond], 0)?;
    let batch = 2 * latents.dim(0)?;
    guided_ddim(
        sampler,
        latents,
        guidance,
        |x, t| unet.forward(x, &vec![t; batch], &context),
        on_step,
    )
}

/// The DDIM loop with classifier-free guidance around any `model(x, t)` that takes the
/// latents twice (unconditional half first) and returns both predictions.
pub fn guided_ddim(
    sampler: &DdimSampler,
    latents: &Tensor,
    guidance: f64,
    mut model: impl FnMut(&Tensor, f64) -> CResult<Tensor>,
    mut on_step: impl FnMut(usize, &Tensor),
) -> CResult<Tensor> {
    let mut x = latents.clone();
    for (i, &t) in sampler.timesteps().iter().enumerate() {
        let output = model(&Tensor::cat(&[&x, &x], 0)?, t as f64)?;
        x = sampler.step(i, &x, &apply_guidance(&output, guidance)?)?;
        on_step(i, &x);
    }
    Ok(x)
}
