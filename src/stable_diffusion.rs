//! The Stable Diffusion model set (text encoder, UNet, VAE, schedule, tokenizer) loaded from
//! resolved [`ModelFiles`].

use crate::diffusion::NoiseSchedule;
use crate::error::Result;
use crate::models::unet::UNetLayout;
use crate::models::{
    AutoencoderKL, ClipTextConfig, ClipTextModel, UNet2DConditionModel, UNetConfig, VaeConfig,
};
use crate::tokenizer::ClipTokenizer;
use crate::weights::{ModelFiles, Weights};
use candle_core::{DType, Device, Tensor};

/// What loading one network's file found.
#[derive(Debug, Clone, Copy)]
pub struct LoadStats {
    /// Elements of the tensors the network took.
    pub parameters: usize,
    /// The dtype the file stores them in (they are converted on load).
    pub stored_dtype: DType,
}

impl LoadStats {
    pub fn of(weights: &Weights) -> Self {
        Self {
            parameters: weights.used_parameter_count(),
            stored_dtype: weights.stored_dtype(),
        }
    }
}

/// [`LoadStats`] of each network.
#[derive(Debug, Clone, Copy)]
pub struct ParameterCounts {
    pub text_encoder: LoadStats,
    pub unet: LoadStats,
    pub vae: LoadStats,
}

pub struct StableDiffusion {
    pub files: ModelFiles,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub schedule: NoiseSchedule,
    pub parameters: ParameterCounts,
    pub dtype: DType,
    /// The tensors each network took (text encoder, UNet, VAE).
    weights: [Weights; 3],
}

impl StableDiffusion {
    pub fn load(files: ModelFiles, dtype: DType, device: &Device) -> Result<Self> {
        let (text_encoder, text_weights) = load_text_encoder(&files, dtype, device)?;
        let (unet, unet_weights) = load_unet(&files, dtype, device)?;
        let (vae, vae_weights) = load_vae(&files, dtype, device)?;
        Ok(Self {
            tokenizer: ClipTokenizer::for_model(files.tokenizer_dir.as_deref())?,
            schedule: NoiseSchedule::load(&files.scheduler_config)?,
            parameters: ParameterCounts {
                text_encoder: LoadStats::of(&text_weights),
                unet: LoadStats::of(&unet_weights),
                vae: LoadStats::of(&vae_weights),
            },
            weights: [text_weights, unet_weights, vae_weights],
            text_encoder,
            unet,
            vae,
            files,
            dtype,
        })
    }

    /// The device the networks run on.
    pub fn unet_device(&self) -> Device {
        self.unet.device().clone()
    }

    /// Every frozen weight of the three networks, by name (tests check none gets a gradient).
    pub fn weight_tensors(&self) -> Vec<(String, Tensor)> {
        self.weights.iter().flat_map(Weights::tensors).collect()
    }

    /// The text encoder's 1 × 77 × D states for a plain prompt (the empty prompt is the
    /// unconditional embedding).
    pub fn encode_text(&self, prompt: &str) -> Result<Tensor> {
        crate::sample::Models::from(self).encode_text(prompt)
    }

    /// Image resolution in pixels the UNet was trained at (512 for 2.1-base, 768 for 2.1).
    pub fn resolution(&self) -> Option<usize> {
        crate::sample::Models::from(self).resolution()
    }
}

pub fn load_text_encoder(
    files: &ModelFiles,
    dtype: DType,
    device: &Device,
) -> Result<(ClipTextModel, Weights)> {
    let c = &files.text_encoder;
    let config = ClipTextConfig::load(&c.config)?;
    let weights = Weights::load(&c.weights, dtype, device)?;
    let model = ClipTextModel::load(config, &c.config, &weights)?;
    weights.check_all_used()?;
    Ok((model, weights))
}

pub fn load_unet(
    files: &ModelFiles,
    dtype: DType,
    device: &Device,
) -> Result<(UNet2DConditionModel, Weights)> {
    let c = &files.unet;
    let (config, layout): (UNetConfig, UNetLayout) = UNetConfig::load(&c.config)?;
    let weights = Weights::load(&c.weights, dtype, device)?;
    let model = UNet2DConditionModel::load(config, layout, &weights)?;
    weights.check_all_used()?;
    Ok((model, weights))
}

pub fn load_vae(
    files: &ModelFiles,
    dtype: DType,
    device: &Device,
) -> Result<(AutoencoderKL, Weights)> {
    let c = &files.vae;
    let config = VaeConfig::load(&c.config)?;
    let weights = Weights::load(&c.weights, dtype, device)?;
    let model = AutoencoderKL::load(config, &weights)?;
    weights.check_all_used()?;
    Ok((model, weights))
}
