//! Every option of a fit, with the official DreamDistribution defaults; read from TOML and
//! written back resolved into the run directory.

use crate::error::{Error, Result};
use crate::prompt::PositionMode;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FitConfig {
    /// Folder of reference images.
    pub refs: PathBuf,
    /// Diffusers folder or hub repo id.
    pub model: String,
    /// K: soft prompts.
    pub prompts: usize,
    /// L: learned tokens per prompt.
    pub tokens: usize,
    /// M: reparameterised conditionings per image and step.
    pub samples: usize,
    pub batch: usize,
    pub steps: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    /// Min-SNR γ (0 turns the weighting off).
    pub min_snr_gamma: f64,
    pub orthogonality_weight: f64,
    /// Training crop size in pixels (default: the model's resolution).
    pub resolution: Option<usize>,
    /// Random crops per image encoded once by the frozen VAE and reused.
    pub crops_per_image: usize,
    pub prefix: String,
    pub suffix: String,
    pub position_mode: PositionMode,
    pub seed: u64,
    pub checkpoint_every: usize,
    /// Recompute text-encoder layers in the backward pass (K prompts' activations are the
    /// largest memory item of a step; costs about one more text-encoder forward).
    pub text_encoder_checkpointing: bool,
    /// Where the finished distribution is written besides the run directory (`-o`; none:
    /// dream3d-runs/latest.dist.safetensors). Kept here so that a resumed run writes it there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<PathBuf>,
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            refs: PathBuf::new(),
            model: "stabilityai/stable-diffusion-2-1".into(),
            prompts: 32,
            tokens: 4,
            samples: 4,
            batch: 4,
            steps: 2000,
            lr: 1e-3,
            weight_decay: 1e-2,
            grad_clip: 1.0,
            min_snr_gamma: 5.0,
            orthogonality_weight: 1e-3,
            resolution: None,
            crops_per_image: 8,
            prefix: String::new(),
            suffix: String::new(),
            position_mode: PositionMode::Official,
            seed: 0,
            checkpoint_every: 200,
            text_encoder_checkpointing: true,
            output: None,
        }
    }
}

impl crate::run_dir::RunConfig for FitConfig {
    const COMMAND: &'static str = "fit";
}

impl FitConfig {
    /// Rejects settings the method cannot run with, naming the option.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            (
                "--prompts",
                self.prompts >= 2,
                "at least 2: σ is taken over the K prompts",
            ),
            ("--tokens", self.tokens >= 1, "at least 1"),
            ("--samples", self.samples >= 1, "at least 1"),
            ("--batch", self.batch >= 1, "at least 1"),
            ("--steps", self.steps >= 1, "at least 1"),
            ("--crops-per-image", self.crops_per_image >= 1, "at least 1"),
            (
                "--checkpoint-every",
                self.checkpoint_every >= 1,
                "at least 1",
            ),
            (
                "--lr",
                self.lr > 0.0 && self.lr.is_finite(),
                "a positive number",
            ),
            ("--grad-clip", self.grad_clip > 0.0, "a positive number"),
            (
                "--min-snr-gamma",
                self.min_snr_gamma >= 0.0,
                "0 (off) or positive",
            ),
        ];
        for (option, ok, need) in positive {
            if !ok {
                return Err(Error::Input(format!("{option} must be {need}")));
            }
        }
        Ok(())
    }
}
