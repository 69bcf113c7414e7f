//! The prompt distribution value and its file: soft prompts (K × L × D), μ and σ (77 × D) and
//! the metadata needed to use it exactly as it was trained, in one safetensors file.

use super::gaussian::Gaussian;
use super::sequence::{PositionMode, Template};
use crate::diffusion::PredictionType;
use crate::error::{Error, Result};
use crate::models::ClipTextConfig;
use crate::weights::{save_atomic, TensorFile};
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use std::collections::HashMap;
use std::path::Path;

/// Identifies our files among safetensors files.
const FORMAT: &str = "dream3d-prompt-distribution";
pub const FORMAT_VERSION: u32 = 1;

/// Everything about a distribution besides its tensors.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DistributionMeta {
    pub format: String,
    pub format_version: u32,
    /// `--model` the distribution was fitted on.
    pub base_model: String,
    /// Text encoder shape: width, layers, vocabulary.
    pub text_hidden_size: usize,
    pub text_layers: usize,
    pub text_vocab: usize,
    pub prediction_type: PredictionType,
    pub prompts: usize,
    pub tokens_per_prompt: usize,
    pub prefix: String,
    pub suffix: String,
    pub position_mode: PositionMode,
    /// Optimisation steps (0 when imported from files that do not record them).
    pub steps: usize,
    pub seed: u64,
    pub dream3d_version: String,
}

impl DistributionMeta {
    pub fn template(&self) -> Template {
        Template {
            prefix: self.prefix.clone(),
            suffix: self.suffix.clone(),
        }
    }
}

/// A fitted prompt distribution.
#[derive(Debug, Clone)]
pub struct PromptDistribution {
    /// K × L × D learned token embeddings (what edits re-encode).
    pub soft_prompts: Tensor,
    /// 77 × D mean and standard deviation of the K encoded prompts.
    pub mu: Tensor,
    pub sigma: Tensor,
    pub meta: DistributionMeta,
}

impl PromptDistribution {
    /// Writes the file atomically (a temporary file beside it, then a rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = serde_json::to_string(&self.meta).expect("metadata serialises");
        let (soft, mu, sigma) = (
            self.soft_prompts.to_dtype(DType::F32)?,
            self.mu.to_dtype(DType::F32)?,
            self.sigma.to_dtype(DType::F32)?,
        );
        let tensors = [("soft_prompts", &soft), ("mu", &mu), ("sigma", &sigma)];
        save_atomic(
            path,
            &tensors,
            HashMap::from([("dream3d".to_string(), meta)]),
        )
    }

    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let mut file = TensorFile::read(path, device)?;
        let meta_json = file.metadata.get("dream3d").ok_or_else(|| {
            Error::Input(format!(
                "{}: not a dream3d prompt distribution (no dream3d metadata)",
                path.display()
            ))
        })?;
        let meta: DistributionMeta =
            serde_json::from_str(meta_json).map_err(|e| Error::BadConfig {
                path: path.to_path_buf(),
                reason: format!("distribution metadata: {e}"),
            })?;
        if meta.format != FORMAT || meta.format_version > FORMAT_VERSION {
            return Err(Error::Input(format!(
                "{}: format {} v{} is not readable by this dream3d (reads {FORMAT} up to v{FORMAT_VERSION}); update dream3d",
                path.display(),
                meta.format,
                meta.format_version
            )));
        }
        let d = meta.text_hidden_size;
        let positions = crate::tokenizer::CONTEXT_LENGTH;
        Ok(Self {
            soft_prompts: file.take(
                "soft_prompts",
                Some(&[meta.prompts, meta.tokens_per_prompt, d]),
            )?,
            mu: file.take("mu", Some(&[positions, d]))?,
            sigma: file.take("sigma", Some(&[positions, d]))?,
            meta,
        })
    }

    /// Fails, explaining how, unless the distribution was fitted with a text encoder of the
    /// same shape as `text` (SD 2.1 and 2.1-base share theirs, and MVDream uses it too).
    pub fn check_compatible(&self, text: &ClipTextConfig, path: &Path) -> Result<()> {
        let m = &self.meta;
        let ours = (text.hidden_size, text.num_hidden_layers, text.vocab_size);
        let theirs = (m.text_hidden_size, m.text_layers, m.text_vocab);
        if ours == theirs {
            return Ok(());
        }
        Err(Error::Input(format!(
            "{} was fitted on {} (text encoder width {}, {} layers, vocabulary {}), but the model in use has width {}, {} layers, vocabulary {}: use a model with the same text encoder (SD 2.1 / 2.1-base / MVDream share one) or fit again",
            path.display(),
            m.base_model,
            theirs.0,
            theirs.1,
            theirs.2,
            ours.0,
            ours.1,
            ours.2
        )))
    }

    /// The fitted N(μ, σ²), unscaled.
    pub fn gaussian(&self) -> Gaussian {
        Gaussian {
            mu: self.mu.clone(),
            sigma: self.sigma.clone(),
        }
    }

    /// One conditioning (77 × D) drawn from N(μ, (γσ)²) with `rng`; γ = 0 gives μ.
    pub fn sample(&self, gamma: f64, rng: &mut impl Rng) -> Result<Tensor> {
        self.gaussian().scaled(gamma)?.sample(rng)
    }
}
