//! The training noise schedule and the conversions between ε, v and x₀ (diffusers
//! `DDIMScheduler` semantics, read from `scheduler/scheduler_config.json`).

use crate::error::Result;
use crate::models::config::{read_json, unsupported};
use candle_core::{Result as CResult, Tensor};
use std::path::Path;

/// What the UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    Epsilon,
    VPrediction,
}

/// How inference timesteps are spread over the training range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "default_steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default = "default_prediction")]
    pub prediction_type: String,
    #[serde(default)]
    pub set_alpha_to_one: bool,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default = "default_spacing")]
    pub timestep_spacing: String,
    #[serde(default)]
    pub clip_sample: bool,
    #[serde(default)]
    pub thresholding: bool,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
}

fn default_steps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.00085
}
fn default_beta_end() -> f64 {
    0.012
}
fn default_beta_schedule() -> String {
    "scaled_linear".into()
}
fn default_prediction() -> String {
    "epsilon".into()
}
fn default_spacing() -> String {
    "leading".into()
}

/// The schedule: ᾱ_t for every training step and how to step through it.
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    pub alphas_cumprod: Vec<f64>,
    pub prediction: PredictionType,
    pub spacing: TimestepSpacing,
    pub steps_offset: usize,
    /// ᾱ used past the last step: 1 (`set_alpha_to_one`) or ᾱ₀.
    pub final_alpha_cumprod: f64,
}

impl NoiseSchedule {
    /// Reads `scheduler_config.json` of any diffusers scheduler class sharing these fields
    /// (SD 2.1-base ships PNDM, SD 2.1 DDIM; both define the same schedule).
    pub fn load(path: &Path) -> Result<Self> {
        let c: SchedulerConfig = read_json(path)?;
        Self::from_config(&c, path)
    }

    pub fn from_config(c: &SchedulerConfig, path: &Path) -> Result<Self> {
        let n = c.num_train_timesteps;
        let betas: Vec<f32> = match (c.beta_schedule.as_str(), &c.trained_betas) {
            (_, Some(b)) => b.iter().map(|&x| x as f32).collect(),
            ("linear", None) => linspace_f32(c.beta_start as f32, c.beta_end as f32, n),
            ("scaled_linear", None) => {
                linspace_f32(c.beta_start.sqrt() as f32, c.beta_end.sqrt() as f32, n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            (other, None) => {
                return Err(unsupported(
                    path,
                    "beta_schedule",
                    other,
                    "linear, scaled_linear",
                ))
            }
        };
        let prediction = match c.prediction_type.as_str() {
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            other => {
                return Err(unsupported(
                    path,
                    "prediction_type",
                    other,
                    "epsilon, v_prediction",
                ))
            }
        };
        let spacing = match c.timestep_spacing.as_str() {
            "leading" => TimestepSpacing::Leading,
            "trailing" => TimestepSpacing::Trailing,
            "linspace" => TimestepSpacing::Linspace,
            other => {
                return Err(unsupported(
                    path,
                    "timestep_spacing",
                    other,
                    "leading, trailing, linspace",
                ))
            }
        };
        for (field, on) in [
            ("clip_sample", c.clip_sample),
            ("thresholding", c.thresholding),
            ("rescale_betas_zero_snr", c.rescale_betas_zero_snr),
        ] {
            if on {
                return Err(unsupported(
                    path,
                    field,
                    true,
                    "false (as in every SD 1.x/2.x release)",
                ));
            }
        }
        // torch.cumprod of float32 alphas accumulates in double and rounds each result to
        // float32; doing the same reproduces diffusers' table bit for bit.
        let mut acc = 1f64;
        let alphas_cumprod: Vec<f64> = betas
            .iter()
            .map(|b| {
                acc *= (1.0 - b) as f64;
                acc as f32 as f64
            })
            .collect();
        Ok(Self {
            final_alpha_cumprod: if c.set_alpha_to_one {
                1.0
            } else {
                alphas_cumprod[0]
            },
            alphas_cumprod,
            prediction,
            spacing,
            steps_offset: c.steps_offset,
        })
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// The `steps` inference timesteps, descending (diffusers `set_timesteps`).
    pub fn timesteps(&self, steps: usize) -> Vec<usize> {
        let n = self.num_train_timesteps();
        let steps = steps.clamp(1, n);
        let mut t: Vec<usize> = match self.spacing {
            TimestepSpacing::Leading => {
                let ratio = n / steps;
                (0..steps).map(|i| i * ratio + self.steps_offset).collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = n as f64 / steps as f64;
                (1..=steps)
                    .map(|i| (i as f64 * ratio).round() as usize - 1)
                    .collect()
            }
            TimestepSpacing::Linspace => (0..steps)
                .map(|i| {
                    let v = (n - 1) as f64 * i as f64 / (steps.max(2) - 1) as f64;
                    v.round() as usize
                })
                .collect(),
        };
        t.reverse();
        t
    }

    /// ᾱ at `t`, or the final value for `t < 0`.
    pub fn alpha_cumprod(&self, t: i64) -> f64 {
        if t < 0 {
            self.final_alpha_cumprod
        } else {
            self.alphas_cumprod[t as usize]
        }
    }

    /// Signal-to-noise ratio ᾱ/(1−ᾱ) at `t` (for Min-SNR loss weighting).
    pub fn snr(&self, t: usize) -> f64 {
        let a = self.alphas_cumprod[t];
        a / (1.0 - a)
    }

    /// (x₀, ε) from the model output at noisy latents `x` with ᾱ = `alpha`.
    pub fn split_prediction(
        &self,
        x: &Tensor,
        output: &Tensor,
        alpha: f64,
    ) -> CResult<(Tensor, Tensor)> {
        let (sa, sb) = (alpha.sqrt(), (1.0 - alpha).sqrt());
        match self.prediction {
            PredictionType::Epsilon => {
                let x0 = ((x - (output * sb)?)? / sa)?;
                Ok((x0, output.clone()))
            }
            PredictionType::VPrediction => {
                let x0 = ((x * sa)? - (output * sb)?)?;
                let eps = ((output * sa)? + (x * sb)?)?;
                Ok((x0, eps))
            }
        }
    }

    /// The training target for clean latents `x0` and noise `eps` at ᾱ = `alpha`.
    pub fn target(&self, x0: &Tensor, eps: &Tensor, alpha: f64) -> CResult<Tensor> {
        match self.prediction {
            PredictionType::Epsilon => Ok(eps.clone()),
            PredictionType::VPrediction => (eps * alpha.sqrt())? - (x0 * (1.0 - alpha).sqrt())?,
        }
    }

    /// `√ᾱ·x₀ + √(1−ᾱ)·ε` (diffusers `add_noise`).
    pub fn add_noise(&self, x0: &Tensor, eps: &Tensor, t: usize) -> CResult<Tensor> {
        let a = self.alphas_cumprod[t];
        (x0 * a.sqrt())? + (eps * (1.0 - a).sqrt())?
    }
}

/// `torch.linspace` in float32, bit for bit: a float32 step, each point `start + step·i` (or
/// `end − step·(n−1−i)` for the second half) rounded once, as the vectorised kernel's fused
/// multiply-add does.
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = ((end - start) / (n - 1) as f32) as f64;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                (start as f64 + step * i as f64) as f32
            } else {
                (end as f64 - step * (n - 1 - i) as f64) as f32
            }
        })
        .collect()
}
