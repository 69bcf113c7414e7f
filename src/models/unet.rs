//! diffusers `UNet2DConditionModel` as Stable Diffusion 1.x/2.x configure it, built from
//! `unet/config.json`. One timestep per batch element.

use super::blocks::{Downsample2D, ResnetBlock2D, ResnetSpec, Upsample2D};
use super::config::{read_json, unsupported, PerBlock};
use super::transformer::{Transformer2D, TransformerSpec};
use crate::error::Result;
use crate::nn::{Conv2d, GroupNorm, Linear};
use crate::weights::{Scope, Weights};
use candle_core::{DType, Result as CResult, Tensor};
use std::path::Path;

fn one<T>(v: T) -> PerBlock<T> {
    PerBlock::One(v)
}

/// The fields of `unet/config.json` that shape the network; every other supported field must
/// hold its default, which [`UNetConfig::load`] checks.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    #[serde(default)]
    pub mid_block_type: Option<String>,
    pub layers_per_block: usize,
    /// diffusers' legacy name: for SD this is the number of heads per block.
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    pub cross_attention_dim: usize,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "default_depth")]
    pub transformer_layers_per_block: PerBlock<usize>,
    #[serde(default = "default_act")]
    pub act_fn: String,
    #[serde(default = "default_one")]
    pub downsample_padding: usize,
    #[serde(default = "default_scale")]
    pub mid_block_scale_factor: f64,
    #[serde(default)]
    pub sample_size: Option<usize>,
    /// MVDream: width of the camera conditioning added to the time embedding.
    #[serde(default)]
    pub camera_dim: Option<usize>,
    #[serde(default = "default_positional")]
    time_embedding_type: String,
    #[serde(default)]
    class_embed_type: Option<String>,
    #[serde(default)]
    addition_embed_type: Option<String>,
    #[serde(default)]
    encoder_hid_dim: Option<usize>,
    #[serde(default)]
    time_cond_proj_dim: Option<usize>,
    #[serde(default = "default_false_each")]
    only_cross_attention: PerBlock<bool>,
    #[serde(default)]
    dual_cross_attention: bool,
    #[serde(default = "default_shift")]
    resnet_time_scale_shift: String,
    #[serde(default = "default_kernel")]
    conv_in_kernel: usize,
    #[serde(default = "default_kernel")]
    conv_out_kernel: usize,
    #[serde(default)]
    center_input_sample: bool,
}

fn default_groups() -> usize {
    32
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_depth() -> PerBlock<usize> {
    one(1)
}
fn default_act() -> String {
    "silu".into()
}
fn default_one() -> usize {
    1
}
fn default_scale() -> f64 {
    1.0
}
fn default_positional() -> String {
    "positional".into()
}
fn default_false_each() -> PerBlock<bool> {
    one(false)
}
fn default_shift() -> String {
    "default".into()
}
fn default_kernel() -> usize {
    3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    CrossAttn,
    Plain,
}

/// The validated, per-block view of a [`UNetConfig`].
#[derive(Debug, Clone)]
pub struct UNetLayout {
    down: Vec<BlockKind>,
    up: Vec<BlockKind>,
    /// Heads of each down block (the up path uses them reversed, the mid block the last).
    pub heads: Vec<usize>,
    pub depth: Vec<usize>,
}

impl UNetConfig {
    /// Reads and validates `unet/config.json`.
    pub fn load(path: &Path) -> Result<(Self, UNetLayout)> {
        let config: Self = read_json(path)?;
        let layout = config.validate(path)?;
        Ok((config, layout))
    }

    pub fn validate(&self, path: &Path) -> Result<UNetLayout> {
        let n = self.block_out_channels.len();
        let bad = |field: &str, value: &dyn std::fmt::Debug, ok: &str| {
            Err(unsupported(path, field, value, ok))
        };
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad(
                "down_block_types/up_block_types",
                &(&self.down_block_types, &self.up_block_types),
                "one down and one up block per entry of block_out_channels",
            );
        }
        let kind = |t: &str, cross: &str, plain: &str| match t {
            _ if t == cross => Some(BlockKind::CrossAttn),
            _ if t == plain => Some(BlockKind::Plain),
            _ => None,
        };
        let down = self
            .down_block_types
            .iter()
            .map(|t| kind(t, "CrossAttnDownBlock2D", "DownBlock2D"))
            .collect::<Option<Vec<_>>>();
        let Some(down) = down else {
            return bad(
                "down_block_types",
                &self.down_block_types,
                "CrossAttnDownBlock2D, DownBlock2D",
            );
        };
        let up = self
            .up_block_types
            .iter()
            .map(|t| kind(t, "CrossAttnUpBlock2D", "UpBlock2D"))
            .collect::<Option<Vec<_>>>();
        let Some(up) = up else {
            return bad(
                "up_block_types",
                &self.up_block_types,
                "CrossAttnUpBlock2D, UpBlock2D",
            );
        };
        let mid = self
            .mid_block_type
            .as_deref()
            .unwrap_or("UNetMidBlock2DCrossAttn");
        if mid != "UNetMidBlock2DCrossAttn" {
            return bad("mid_block_type", &mid, "UNetMidBlock2DCrossAttn");
        }
        let heads = self
            .num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim);
        let Some(heads) = heads.expand(n) else {
            return bad("attention_head_dim", heads, "one value or one per block");
        };
        for (c, h) in self.block_out_channels.iter().zip(&heads) {
            if *h == 0 || c % h != 0 {
                return bad(
                    "attention_head_dim",
                    &heads,
                    "head counts that divide the block channels",
                );
            }
            if c % self.norm_num_groups != 0 {
                return bad(
                    "norm_num_groups",
                    &self.norm_num_groups,
                    "a divisor of every block_out_channels entry",
                );
            }
        }
        let Some(depth) = self.transformer_layers_per_block.expand(n) else {
            return bad(
                "transformer_layers_per_block",
                &self.transformer_layers_per_block,
                "one value or one per block",
            );
        };
        let checks: [(&str, bool, &dyn std::fmt::Debug, &str); 12] = [
            ("act_fn", self.act_fn == "silu", &self.act_fn, "silu"),
            (
                "time_embedding_type",
                self.time_embedding_type == "positional",
                &self.time_embedding_type,
                "positional",
            ),
            (
                "class_embed_type",
                self.class_embed_type.is_none(),
                &self.class_embed_type,
                "null",
            ),
            (
                "addition_embed_type",
                self.addition_embed_type.is_none(),
                &self.addition_embed_type,
                "null",
            ),
            (
                "encoder_hid_dim",
                self.encoder_hid_dim.is_none(),
                &self.encoder_hid_dim,
                "null",
            ),
            (
                "time_cond_proj_dim",
                self.time_cond_proj_dim.is_none(),
                &self.time_cond_proj_dim,
                "null",
            ),
            (
                "only_cross_attention",
                self.only_cross_attention
                    .expand(n)
                    .is_some_and(|v| v.iter().all(|x| !x)),
                &self.only_cross_attention,
                "false",
            ),
            (
                "dual_cross_attention",
                !self.dual_cross_attention,
                &self.dual_cross_attention,
                "false",
            ),
            (
                "resnet_time_scale_shift",
                self.resnet_time_scale_shift == "default",
                &self.resnet_time_scale_shift,
                "default",
            ),
            (
                "conv_in_kernel",
                self.conv_in_kernel == 3,
                &self.conv_in_kernel,
                "3",
            ),
            (
                "conv_out_kernel",
                self.conv_out_kernel == 3,
                &self.conv_out_kernel,
                "3",
            ),
            (
                "center_input_sample",
                !self.center_input_sample,
                &self.center_input_sample,
                "false",
            ),
        ];
        for (field, ok, value, supported) in checks {
            if !ok {
                return bad(field, value, supported);
            }
        }
        Ok(UNetLayout {
            down,
            up,
            heads,
            depth,
        })
    }

    /// Latent resolution the model was trained at (64 for SD 2.1-base, 96 for SD 2.1).
    pub fn sample_size(&self) -> Option<usize> {
        self.sample_size
    }
}

struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    downsample: Option<Downsample2D>,
}

struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    upsample: Option<Upsample2D>,
}

/// The conditional UNet: `ε` or `v` (per the scheduler) from noisy latents, timesteps and text.
pub struct UNet2DConditionModel {
    pub config: UNetConfig,
    pub layout: UNetLayout,
    conv_in: Conv2d,
    time_linear_1: Linear,
    time_linear_2: Linear,
    /// MVDream's `camera_embed`: Linear, SiLU, Linear, added to the time embedding.
    camera_embed: Option<(Linear, Linear)>,
    down: Vec<DownBlock>,
    mid_resnets: [ResnetBlock2D; 2],
    mid_attention: Transformer2D,
    up: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    device: candle_core::Device,
}

impl UNet2DConditionModel {
    pub fn load(config: UNetConfig, layout: UNetLayout, weights: &Weights) -> Result<Self> {
        let s = weights.root();
        let c = &config;
        let ch = &c.block_out_channels;
        let n = ch.len();
        let temb = 4 * ch[0];
        let resnet = |scope: &Scope, in_ch: usize, out_ch: usize, scale: f64| {
            ResnetBlock2D::load(
                scope,
                &ResnetSpec {
                    in_ch,
                    out_ch,
                    temb_ch: Some(temb),
                    groups: c.norm_num_groups,
                    eps: c.norm_eps,
                    output_scale: scale,
                },
            )
        };
        let transformer = |scope: &Scope, channels: usize, block: usize| {
            Transformer2D::load(
                scope,
                &TransformerSpec {
                    channels,
                    heads: layout.heads[block],
                    depth: layout.depth[block],
                    context_dim: c.cross_attention_dim,
                    groups: c.norm_num_groups,
                    linear_projection: c.use_linear_projection,
                },
            )
        };

        let mut down = Vec::with_capacity(n);
        for (i, kind) in layout.down.iter().enumerate() {
            let b = s.at(format!("down_blocks.{i}"));
            let in_ch = if i == 0 { ch[0] } else { ch[i - 1] };
            let mut block = DownBlock {
                resnets: vec![],
                attentions: vec![],
                downsample: None,
            };
            for j in 0..c.layers_per_block {
                let r_in = if j == 0 { in_ch } else { ch[i] };
                block
                    .resnets
                    .push(resnet(&b.at(format!("resnets.{j}")), r_in, ch[i], 1.0)?);
                if *kind == BlockKind::CrossAttn {
                    block
                        .attentions
                        .push(transformer(&b.at(format!("attentions.{j}")), ch[i], i)?);
                }
            }
            if i + 1 < n {
                block.downsample = Some(Downsample2D::load(
                    &b.at("downsamplers.0"),
                    ch[i],
                    c.downsample_padding,
                )?);
            }
            down.push(block);
        }

        let mid = s.at("mid_block");
        let last = ch[n - 1];
        let mid_resnets = [
            resnet(&mid.at("resnets.0"), last, last, c.mid_block_scale_factor)?,
            resnet(&mid.at("resnets.1"), last, last, c.mid_block_scale_factor)?,
        ];
        let mid_attention = transformer(&mid.at("attentions.0"), last, n - 1)?;

        let mut up = Vec::with_capacity(n);
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        for (i, kind) in layout.up.iter().enumerate() {
            let b = s.at(format!("up_blocks.{i}"));
            let prev_out = if i == 0 { rev[0] } else { rev[i - 1] };
            let out_ch = rev[i];
            let skip_in = rev[(i + 1).min(n - 1)];
            let mut block = UpBlock {
                resnets: vec![],
                attentions: vec![],
                upsample: None,
            };
            for j in 0..=c.layers_per_block {
                let r_in = if j == 0 { prev_out } else { out_ch };
                let skip = if j == c.layers_per_block {
                    skip_in
                } else {
                    out_ch
                };
                block.resnets.push(resnet(
                    &b.at(format!("resnets.{j}")),
                    r_in + skip,
                    out_ch,
                    1.0,
                )?);
                if *kind == BlockKind::CrossAttn {
                    block.attentions.push(transformer(
                        &b.at(format!("attentions.{j}")),
                        out_ch,
                        n - 1 - i,
                    )?);
                }
            }
            if i + 1 < n {
                block.upsample = Some(Upsample2D::load(&b.at("upsamplers.0"), out_ch)?);
            }
            up.push(block);
        }

        Ok(Self {
            conv_in: Conv2d::load(&s.at("conv_in"), c.in_channels, ch[0], 3, 1, 1)?,
            time_linear_1: Linear::load(&s.at("time_embedding.linear_1"), ch[0], temb, true)?,
            time_linear_2: Linear::load(&s.at("time_embedding.linear_2"), temb, temb, true)?,
            camera_embed: match c.camera_dim {
                Some(dim) => Some((
                    Linear::load(&s.at("camera_embed.0"), dim, temb, true)?,
                    Linear::load(&s.at("camera_embed.2"), temb, temb, true)?,
                )),
                None => None,
            },
            down,
            mid_resnets,
            mid_attention,
            up,
            norm_out: GroupNorm::load(
                &s.at("conv_norm_out"),
                c.norm_num_groups,
                ch[0],
                c.norm_eps,
            )?,
            conv_out: Conv2d::load(&s.at("conv_out"), ch[0], c.out_channels, 3, 1, 1)?,
            device: s.device(),
            config,
            layout,
        })
    }

    pub fn device(&self) -> &candle_core::Device {
        &self.device
    }

    /// Sinusoidal embedding of one timestep per batch element (diffusers
    /// `get_timestep_embedding`, computed in f32 like the reference).
    pub fn timestep_features(&self, timesteps: &[f64]) -> Vec<f32> {
        let dim = self.config.block_out_channels[0];
        let half = dim / 2;
        let denom = half as f32 - self.config.freq_shift as f32;
        let freqs: Vec<f32> = (0..half)
            .map(|i| ((-(10000f32.ln()) * i as f32) / denom).exp())
            .collect();
        let mut out = Vec::with_capacity(timesteps.len() * dim);
        for &t in timesteps {
            let args: Vec<f32> = freqs.iter().map(|f| t as f32 * f).collect();
            let (sin, cos) = (args.iter().map(|a| a.sin()), args.iter().map(|a| a.cos()));
            if self.config.flip_sin_to_cos {
                out.extend(cos.chain(sin));
            } else {
                out.extend(sin.chain(cos));
            }
        }
        out
    }

    /// The time embedding (B × 4·C₀) for per-sample timesteps.
    pub fn time_embedding(&self, timesteps: &[f64], dtype: DType) -> CResult<Tensor> {
        let device = &self.device;
        let features = Tensor::from_vec(
            self.timestep_features(timesteps),
            (timesteps.len(), self.config.block_out_channels[0]),
            device,
        )?
        .to_dtype(dtype)?;
        self.time_linear_2
            .forward(&self.time_linear_1.forward(&features)?.silu()?)
    }

    /// Predicts noise (or `v`) for latents B × C × H × W at per-sample `timesteps` (length B),
    /// conditioned on text states B × N × cross_attention_dim.
    pub fn forward(
        &self,
        latents: &Tensor,
        timesteps: &[f64],
        context: &Tensor,
    ) -> CResult<Tensor> {
        self.forward_views(latents, timesteps, context, Views::default())
    }

    /// [`Self::forward`] with MVDream's multi-view conditioning.
    pub fn forward_views(
        &self,
        latents: &Tensor,
        timesteps: &[f64],
        context: &Tensor,
        views: Views,
    ) -> CResult<Tensor> {
        self.forward_traced(latents, timesteps, context, views, None)
    }

    /// The time (+ camera) embedding, before the SiLU the blocks apply.
    pub fn embedding(&self, timesteps: &[f64], views: Views, dtype: DType) -> CResult<Tensor> {
        let temb = self.time_embedding(timesteps, dtype)?;
        match (&self.camera_embed, views.camera) {
            (Some((l1, l2)), Some(camera)) => {
                temb + l2.forward(&l1.forward(&camera.to_dtype(dtype)?)?.silu()?)?
            }
            (None, Some(_)) => candle_core::bail!(
                "cameras given to a UNet without camera_embed (not an MVDream model)"
            ),
            _ => Ok(temb),
        }
    }

    /// [`Self::forward_views`], recording every block's output in `trace` when given.
    pub fn forward_traced(
        &self,
        latents: &Tensor,
        timesteps: &[f64],
        context: &Tensor,
        views: Views,
        mut trace: Option<&mut UNetTrace>,
    ) -> CResult<Tensor> {
        let frames = views.frames.max(1);
        if latents.dim(0)? % frames != 0 {
            candle_core::bail!(
                "batch {} is not a whole number of {frames}-view objects",
                latents.dim(0)?
            );
        }
        let temb = self.embedding(timesteps, views, latents.dtype())?.silu()?;
        let temb = Some(&temb);
        let mut h = self.conv_in.forward(latents)?;
        let mut skips = vec![h.clone()];
        for block in &self.down {
            for (j, resnet) in block.resnets.iter().enumerate() {
                h = resnet.forward(&h, temb)?;
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(&h, context, frames)?;
                }
                skips.push(h.clone());
            }
            if let Some(down) = &block.downsample {
                h = down.forward(&h)?;
                skips.push(h.clone());
            }
        }
        if let Some(t) = trace.as_deref_mut() {
            t.input_blocks = skips.clone();
        }
        h = self.mid_resnets[0].forward(&h, temb)?;
        h = self.mid_attention.forward(&h, context, frames)?;
        h = self.mid_resnets[1].forward(&h, temb)?;
        if let Some(t) = trace.as_deref_mut() {
            t.middle_block = Some(h.clone());
        }
        for block in &self.up {
            let last = block.resnets.len() - 1;
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips.pop().expect("one skip per up resnet");
                h = resnet.forward(&Tensor::cat(&[&h, &skip], 1)?, temb)?;
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(&h, context, frames)?;
                }
                if let (Some(up), true) = (&block.upsample, j == last) {
                    // Match the next skip's size so odd latent sizes work as in diffusers.
                    let size = skips.last().map(Tensor::dims4).transpose()?;
                    h = up.forward(&h, size.map(|(_, _, h, w)| (h, w)))?;
                }
                if let Some(t) = trace.as_deref_mut() {
                    t.output_blocks.push(h.clone());
                }
            }
        }
        self.conv_out.forward(&self.norm_out.forward(&h)?.silu()?)
    }
}

/// MVDream's conditioning beyond the text: the batch holds objects of `frames` views each
/// (object-major), and `camera` gives each image's 16-number camera.
#[derive(Debug, Clone, Copy, Default)]
pub struct Views<'a> {
    pub camera: Option<&'a Tensor>,
    /// Views per object (0 or 1: plain 2D).
    pub frames: usize,
}

/// Every block's output, in the original LDM numbering (`input_blocks.i`, `middle_block`,
/// `output_blocks.i`): for parity tests against the reference implementation.
#[derive(Debug, Default)]
pub struct UNetTrace {
    pub input_blocks: Vec<Tensor>,
    pub middle_block: Option<Tensor>,
    pub output_blocks: Vec<Tensor>,
}
