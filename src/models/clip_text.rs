//! The CLIP text encoder in Hugging Face `CLIPTextModel` layout (SD 2.x: OpenCLIP ViT-H/14's
//! text tower cut at the penultimate layer, exact GELU; SD 1.x: OpenAI CLIP, quick GELU).

use super::config::{read_json, unsupported};
use crate::error::Result;
use crate::nn::{add_frozen, Activation, Attention, FrozenOp, LayerNorm, Linear};
use crate::weights::{Scope, Weights};
use candle_core::{DType, Device, IndexOp, Result as CResult, Tensor, Var};
use std::path::Path;
use std::sync::Arc;

/// The fields of `text_encoder/config.json` that shape the network.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_eps() -> f64 {
    1e-5
}

impl ClipTextConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let config: Self = read_json(path)?;
        config.activation(path)?;
        if config.num_attention_heads == 0 || config.hidden_size % config.num_attention_heads != 0 {
            return Err(unsupported(
                path,
                "num_attention_heads",
                config.num_attention_heads,
                "must divide hidden_size",
            ));
        }
        Ok(config)
    }

    fn activation(&self, path: &Path) -> Result<Activation> {
        Activation::from_config(&self.hidden_act)
            .filter(|a| *a != Activation::Silu)
            .ok_or_else(|| unsupported(path, "hidden_act", &self.hidden_act, "gelu, quick_gelu"))
    }
}

struct EncoderLayer {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl EncoderLayer {
    fn load(s: &Scope, c: &ClipTextConfig, act: Activation) -> Result<Self> {
        let (d, eps) = (c.hidden_size, c.layer_norm_eps);
        let attn = s.at("self_attn");
        let proj = |name: &str| Linear::load(&attn.at(name), d, d, true);
        Ok(Self {
            norm1: LayerNorm::load(&s.at("layer_norm1"), d, eps)?,
            attn: Attention {
                to_q: proj("q_proj")?,
                to_k: proj("k_proj")?,
                to_v: proj("v_proj")?,
                to_out: proj("out_proj")?,
                heads: c.num_attention_heads,
            },
            norm2: LayerNorm::load(&s.at("layer_norm2"), d, eps)?,
            fc1: Linear::load(&s.at("mlp.fc1"), d, c.intermediate_size, true)?,
            fc2: Linear::load(&s.at("mlp.fc2"), c.intermediate_size, d, true)?,
            act,
        })
    }

    fn forward(&self, x: &Tensor, causal_mask: &Tensor) -> CResult<Tensor> {
        let h = self.norm1.forward(x)?;
        let x = (x + self.attn.forward(&h, None, Some(causal_mask))?)?;
        let h = self.norm2.forward(&x)?;
        let h = self
            .fc2
            .forward(&self.act.forward(&self.fc1.forward(&h)?)?)?;
        x + h
    }
}

/// The text encoder; its output is `last_hidden_state` (after the final layer norm), which is
/// what Stable Diffusion conditions on.
pub struct ClipTextModel {
    pub config: ClipTextConfig,
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<Arc<EncoderLayer>>,
    final_norm: LayerNorm,
}

impl ClipTextModel {
    /// Builds the model from `config` and `weights` (keys with or without `text_model.`).
    pub fn load(config: ClipTextConfig, config_path: &Path, weights: &Weights) -> Result<Self> {
        let act = config.activation(config_path)?;
        let root = weights.root();
        let s = if root.contains("text_model.embeddings.token_embedding.weight") {
            root.at("text_model")
        } else {
            root
        };
        let d = config.hidden_size;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                EncoderLayer::load(&s.at(format!("encoder.layers.{i}")), &config, act).map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding: s
                .at("embeddings.token_embedding")
                .get("weight", &[config.vocab_size, d])?,
            position_embedding: s
                .at("embeddings.position_embedding")
                .get("weight", &[config.max_position_embeddings, d])?,
            layers,
            final_norm: LayerNorm::load(&s.at("final_layer_norm"), d, config.layer_norm_eps)?,
            config,
        })
    }

    pub fn device(&self) -> &candle_core::Device {
        self.token_embedding.device()
    }

    pub fn dtype(&self) -> DType {
        self.token_embedding.dtype()
    }

    /// Token embeddings (B × N × D) of integer ids (B × N), without positions.
    pub fn embed_tokens(&self, ids: &Tensor) -> CResult<Tensor> {
        let (b, n) = ids.dims2()?;
        self.token_embedding
            .index_select(&ids.flatten_all()?.to_dtype(DType::U32)?, 0)?
            .reshape((b, n, self.config.hidden_size))
    }

    /// `last_hidden_state` for token ids (B × N).
    pub fn forward(&self, ids: &Tensor) -> CResult<Tensor> {
        self.forward_embeds(&self.embed_tokens(ids)?)
    }

    /// `last_hidden_state` for token embeddings (B × N × D) given directly, so that learned
    /// soft tokens can be spliced between real ones; positions are added here.
    pub fn forward_embeds(&self, embeds: &Tensor) -> CResult<Tensor> {
        self.forward_embeds_with(embeds, false)
    }

    /// [`Self::forward_embeds`], optionally with gradient checkpointing: only each layer's input
    /// is kept for the backward pass, which runs the layer again. With K = 32 prompts at SD 2.1
    /// size this trades one more text-encoder forward for ~6 GB of activations.
    pub fn forward_embeds_with(&self, embeds: &Tensor, checkpointing: bool) -> CResult<Tensor> {
        let n = embeds.dim(1)?;
        let mut x = add_frozen(embeds, &self.position_embedding.i(..n)?.unsqueeze(0)?)?;
        let mask = causal_mask(n, x.dtype(), x.device())?;
        for layer in &self.layers {
            x = if checkpointing {
                checkpointed(layer, &x, &mask)?
            } else {
                layer.forward(&x, &mask)?
            };
        }
        self.final_norm.forward(&x)
    }

    /// Position embeddings of the first `n` positions (N × D).
    pub fn position_embeddings(&self, n: usize) -> CResult<Tensor> {
        self.position_embedding.i(..n)
    }

    /// The pooled feature: each row's hidden state at its end-of-text position.
    pub fn pooled(&self, hidden: &Tensor, eos_positions: &[usize]) -> CResult<Tensor> {
        let rows = eos_positions
            .iter()
            .enumerate()
            .map(|(b, &p)| hidden.i((b, p)))
            .collect::<CResult<Vec<_>>>()?;
        Tensor::stack(&rows, 0)
    }
}

/// `layer(x)` whose backward recomputes the layer from its input (the weights are frozen, so
/// only the input gradient is needed).
fn checkpointed(layer: &Arc<EncoderLayer>, x: &Tensor, mask: &Tensor) -> CResult<Tensor> {
    let (fwd_layer, fwd_mask) = (layer.clone(), mask.clone());
    let (bwd_layer, bwd_mask) = (layer.clone(), mask.clone());
    FrozenOp::new(
        "checkpointed-clip-layer",
        move |x: &Tensor| fwd_layer.forward(x, &fwd_mask),
        move |x: &Tensor, _: &Tensor, g: &Tensor| {
            let input = Var::from_tensor(x)?;
            let y = bwd_layer.forward(input.as_tensor(), &bwd_mask)?;
            let grads = (y * g)?.sum_all()?.backward()?;
            grads.get(input.as_tensor()).cloned().ok_or_else(|| {
                candle_core::Error::Msg("checkpointed layer lost its input gradient".into())
            })
        },
    )
    .apply(x, &[])
}

/// The end-of-text position of each row of token ids: the first occurrence of `eos_id`.
pub fn eos_positions(ids: &Tensor, eos_id: u32) -> CResult<Vec<usize>> {
    let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    Ok(rows
        .iter()
        .map(|r| r.iter().position(|&t| t == eos_id).unwrap_or(r.len() - 1))
        .collect())
}

/// Additive mask that hides later positions: 0 on and below the diagonal, −∞ above.
fn causal_mask(n: usize, dtype: DType, device: &Device) -> CResult<Tensor> {
    let values: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(values, (n, n), device)?.to_dtype(dtype)
}
