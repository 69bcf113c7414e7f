//! The prompt distribution value and its file: soft prompts (K × L × D), μ and σ (77 × D) and
//! the metadata needed to use it exactly as it was trained, in one safetensors file.

use super::sequence::{PositionMode, Template};
use crate::diffusion::PredictionType;
use crate::error::{Error, Result};
use crate::models::ClipTextConfig;
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;
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
        let info = HashMap::from([("dream3d".to_string(), meta)]);
        let tensors = [
            ("soft_prompts", self.soft_prompts.to_dtype(DType::F32)?),
            ("mu", self.mu.to_dtype(DType::F32)?),
            ("sigma", self.sigma.to_dtype(DType::F32)?),
        ];
        let tmp = path.with_extension("safetensors.tmp");
        safetensors::serialize_to_file(tensors.iter().map(|(n, t)| (*n, t)), Some(info), &tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let corrupt = |reason: String| Error::CorruptWeights {
            path: path.to_path_buf(),
            reason,
        };
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("dream3d"))
            .ok_or_else(|| {
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
        let mut tensors = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| corrupt(e.to_string()))?;
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = tensors.remove(name).ok_or_else(|| Error::MissingTensor {
                path: path.to_path_buf(),
                name: name.into(),
            })?;
            if t.dims() != shape {
                return Err(Error::ShapeMismatch {
                    path: path.to_path_buf(),
                    name: name.into(),
                    expected: shape.to_vec(),
                    found: t.dims().to_vec(),
                });
            }
            Ok(t)
        };
        let d = meta.text_hidden_size;
        let positions = crate::tokenizer::CONTEXT_LENGTH;
        Ok(Self {
            soft_prompts: take("soft_prompts", &[meta.prompts, meta.tokens_per_prompt, d])?,
            mu: take("mu", &[positions, d])?,
            sigma: take("sigma", &[positions, d])?,
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

    /// One conditioning (77 × D) drawn from N(μ, (γσ)²) with `rng`; γ = 0 gives μ.
    pub fn sample(&self, gamma: f64, rng: &mut impl Rng) -> Result<Tensor> {
        let n = self.mu.elem_count();
        let eps: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
        let eps =
            Tensor::from_vec(eps, self.mu.shape(), self.mu.device())?.to_dtype(self.mu.dtype())?;
        Ok(((eps * &self.sigma)? * gamma + &self.mu)?)
    }
}
