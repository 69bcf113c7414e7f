//! CLIP's image tower, for CLIP-I (and CLIP-T with a text tower): the layout transformers'
//! `CLIPVisionModelWithProjection` and `CLIPModel` save (`vision_model.*`,
//! `visual_projection.weight`), run by candle-transformers' `ClipVisionTransformer` as it is
//! (evaluation needs no gradients) plus the projection. That module implements OpenAI's towers
//! (quick_gelu, LayerNorm ε 1e-5); a config asking for anything else is refused, not
//! approximated.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use candle_transformers::models::clip::text_model::{
    Activation, ClipTextConfig, ClipTextTransformer,
};
use candle_transformers::models::clip::vision_model::{ClipVisionConfig, ClipVisionTransformer};
use image::imageops::FilterType;
use image::RgbImage;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// OpenAI CLIP's pixel normalisation (transformers' `CLIPImageProcessor`).
const MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// What both towers' config sections say that loading checks.
trait Section: DeserializeOwned {
    fn activation(&self) -> &str;
    fn layer_norm_eps(&self) -> f64;
    fn projection_dim(&self) -> Option<usize>;
    fn hidden_size(&self) -> usize;
}

/// A tower's checkpoint folder opened: its config section (under `key` in a whole `CLIPModel`
/// config, else the top level), checked to be an OpenAI tower, with its projection size and
/// its weights as a shape-checking builder.
struct Tower<C> {
    config_path: PathBuf,
    config: C,
    projection_dim: usize,
    weights: VarBuilder<'static>,
    weights_path: PathBuf,
}

impl<C: Section> Tower<C> {
    fn open(dir: &Path, key: &str, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let bad = |reason: String| Error::BadConfig {
            path: config_path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let section = json.get(key).unwrap_or(&json).clone();
        let config: C = serde_json::from_value(section).map_err(|e| bad(e.to_string()))?;
        // What candle-transformers' CLIP implements: OpenAI's towers.
        let (activation, eps) = (config.activation(), config.layer_norm_eps());
        if activation != "quick_gelu" || (eps - 1e-5).abs() > 1e-12 {
            return Err(bad(format!(
                "hidden_act {activation} and layer_norm_eps {eps}: only OpenAI's CLIP towers (quick_gelu, 1e-5) are supported, e.g. openai/clip-vit-large-patch14"
            )));
        }
        let top_level = json["projection_dim"].as_u64().map(|v| v as usize);
        let projection_dim = config.projection_dim().or(top_level).ok_or_else(|| {
            bad("no projection_dim: a CLIP checkpoint with its projections is needed".into())
        })?;
        let weights_path = dir.join("model.safetensors");
        let tensors = candle_core::safetensors::load(&weights_path, device)
            .map_err(|e| Error::io(&weights_path, e))?;
        Ok(Self {
            config_path,
            config,
            projection_dim,
            weights: VarBuilder::from_tensors(tensors, DType::F32, device),
            weights_path,
        })
    }

    /// The network under `prefix` (made by `make`) and the projection `projection`.
    fn build<T>(
        &self,
        prefix: &str,
        projection: &str,
        make: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
    ) -> Result<(T, Linear)> {
        let named =
            |e: candle_core::Error| Error::Input(format!("{}: {e}", self.weights_path.display()));
        let network = make(self.weights.pp(prefix)).map_err(named)?;
        let projection = candle_nn::linear_no_bias(
            self.config.hidden_size(),
            self.projection_dim,
            self.weights.pp(projection),
        )
        .map_err(named)?;
        Ok((network, projection))
    }
}

/// The vision part of a transformers CLIP `config.json` (top level, or under `vision_config`).
#[derive(Debug, Deserialize)]
struct VisionConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    image_size: usize,
    patch_size: usize,
    #[serde(default = "three")]
    num_channels: usize,
    #[serde(default)]
    projection_dim: Option<usize>,
    #[serde(default = "quick_gelu")]
    hidden_act: String,
    #[serde(default = "layer_norm_eps")]
    layer_norm_eps: f64,
}

fn three() -> usize {
    3
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}

fn layer_norm_eps() -> f64 {
    1e-5
}

pub struct ClipImageEncoder {
    tower: ClipVisionTransformer,
    projection: Linear,
    /// Square input size.
    pub image_size: usize,
    pub embedding_dim: usize,
}

impl ClipImageEncoder {
    /// The tower in folder `dir` (`config.json` and `model.safetensors`, as transformers saves
    /// them), every tensor shape-checked against the config.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let tower = Tower::<VisionConfig>::open(dir, "vision_config", device)?;
        let c = &tower.config;
        let config = ClipVisionConfig {
            embed_dim: c.hidden_size,
            activation: Activation::QuickGelu,
            intermediate_size: c.intermediate_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            projection_dim: tower.projection_dim,
            num_channels: c.num_channels,
            image_size: c.image_size,
            patch_size: c.patch_size,
        };
        let (network, projection) = tower.build("vision_model", "visual_projection", |vb| {
            ClipVisionTransformer::new(vb, &config)
        })?;
        Ok(Self {
            tower: network,
            projection,
            image_size: c.image_size,
            embedding_dim: tower.projection_dim,
        })
    }

    /// Image embeddings (B × projection) of normalised pixels (B × 3 × size × size).
    pub fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let pooled = self.tower.forward(pixels)?;
        Ok(self.projection.forward(&pooled)?)
    }

    /// Images as the tower takes them, as `CLIPImageProcessor` prepares them: the shorter side
    /// resized to the input size (bicubic: the `image` crate's Catmull-Rom, close to PIL's but
    /// not bit-equal), the centre cropped square, scaled to [0, 1] and normalised.
    pub fn preprocess(&self, images: &[RgbImage], device: &Device) -> Result<Tensor> {
        let size = self.image_size as u32;
        let mut data = Vec::with_capacity(images.len() * 3 * (size * size) as usize);
        for image in images {
            let (w, h) = image.dimensions();
            if w == 0 || h == 0 {
                return Err(Error::Input("an empty image cannot be embedded".into()));
            }
            let scale = size as f64 / w.min(h) as f64;
            let (rw, rh) = (
                ((w as f64 * scale).round() as u32).max(size),
                ((h as f64 * scale).round() as u32).max(size),
            );
            let resized = image::imageops::resize(image, rw, rh, FilterType::CatmullRom);
            let (x0, y0) = ((rw - size) / 2, (rh - size) / 2);
            let crop = image::imageops::crop_imm(&resized, x0, y0, size, size).to_image();
            for c in 0..3 {
                data.extend(
                    crop.pixels()
                        .map(|p| (f32::from(p[c]) / 255.0 - MEAN[c]) / STD[c]),
                );
            }
        }
        let s = size as usize;
        Ok(Tensor::from_vec(data, (images.len(), 3, s, s), device)?)
    }
}

/// The text part of a transformers CLIP `config.json` (top level, or under `text_config`).
#[derive(Debug, Deserialize)]
struct TextConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    projection_dim: Option<usize>,
    #[serde(default = "quick_gelu")]
    hidden_act: String,
    #[serde(default = "layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    eos_token_id: Option<i64>,
}

/// CLIP's text tower, for CLIP-T: pooled at the end-of-text token, projected.
pub struct ClipTextEncoder {
    tower: ClipTextTransformer,
    projection: Linear,
    pub max_tokens: usize,
    pub embedding_dim: usize,
}

impl ClipTextEncoder {
    /// The tower in folder `dir` (`config.json`, `model.safetensors`), shape-checked. It pools
    /// at the highest token id: what transformers does under OpenAI's hub configs (their
    /// legacy `eos_token_id` = 2), CLIP's end-of-text token being the last of its vocabulary;
    /// a config with another end token is refused.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let tower = Tower::<TextConfig>::open(dir, "text_config", device)?;
        let c = &tower.config;
        if c.eos_token_id.is_some_and(|id| id != 2) {
            return Err(Error::BadConfig {
                path: tower.config_path.clone(),
                reason: "an eos_token_id other than OpenAI's legacy 2: transformers would pool at that token, this tower at the highest id".into(),
            });
        }
        let config = ClipTextConfig {
            vocab_size: c.vocab_size,
            embed_dim: c.hidden_size,
            activation: Activation::QuickGelu,
            intermediate_size: c.intermediate_size,
            max_position_embeddings: c.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            projection_dim: tower.projection_dim,
        };
        let (network, projection) = tower.build("text_model", "text_projection", |vb| {
            ClipTextTransformer::new(vb, &config)
        })?;
        Ok(Self {
            tower: network,
            projection,
            max_tokens: c.max_position_embeddings,
            embedding_dim: tower.projection_dim,
        })
    }

    /// Text embeddings (B × projection) of token ids (B × tokens).
    pub fn embed(&self, input_ids: &Tensor) -> Result<Tensor> {
        let pooled = self.tower.forward(input_ids)?;
        Ok(self.projection.forward(&pooled)?)
    }
}

/// Both sections answer loading's questions alike.
macro_rules! section {
    ($config:ty) => {
        impl Section for $config {
            fn activation(&self) -> &str {
                &self.hidden_act
            }
            fn layer_norm_eps(&self) -> f64 {
                self.layer_norm_eps
            }
            fn projection_dim(&self) -> Option<usize> {
                self.projection_dim
            }
            fn hidden_size(&self) -> usize {
                self.hidden_size
            }
        }
    };
}
section!(VisionConfig);
section!(TextConfig);
