//! diffusers `AutoencoderKL` (the SD VAE), built from `vae/config.json`.

use super::blocks::{Downsample2D, ResnetBlock2D, ResnetSpec, Upsample2D};
use super::config::{read_json, unsupported};
use crate::error::Result;
use crate::nn::{Attention, Conv2d, GroupNorm, Linear};
use crate::weights::{Scope, Weights};
use candle_core::{Result as CResult, Tensor};
use std::path::Path;

#[derive(Debug, Clone, serde::Deserialize)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_scaling")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "default_act")]
    pub act_fn: String,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
    #[serde(default)]
    pub sample_size: Option<usize>,
}

fn default_groups() -> usize {
    32
}
fn default_scaling() -> f64 {
    0.18215
}
fn default_act() -> String {
    "silu".into()
}
fn default_true() -> bool {
    true
}

impl VaeConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let c: Self = read_json(path)?;
        let n = c.block_out_channels.len();
        if let Some(t) = c
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            return Err(unsupported(
                path,
                "down_block_types",
                t,
                "DownEncoderBlock2D",
            ));
        }
        if let Some(t) = c.up_block_types.iter().find(|t| *t != "UpDecoderBlock2D") {
            return Err(unsupported(path, "up_block_types", t, "UpDecoderBlock2D"));
        }
        if n == 0 || c.down_block_types.len() != n || c.up_block_types.len() != n {
            return Err(unsupported(
                path,
                "block_out_channels",
                &c.block_out_channels,
                "one entry per down and up block",
            ));
        }
        if c.act_fn != "silu" {
            return Err(unsupported(path, "act_fn", &c.act_fn, "silu"));
        }
        if c.shift_factor.is_some_and(|s| s != 0.0) {
            return Err(unsupported(
                path,
                "shift_factor",
                c.shift_factor,
                "null (SD 1.x/2.x VAEs)",
            ));
        }
        if let Some(ch) = c
            .block_out_channels
            .iter()
            .find(|ch| *ch % c.norm_num_groups != 0)
        {
            return Err(unsupported(
                path,
                "norm_num_groups",
                c.norm_num_groups,
                &format!("a divisor of {ch}"),
            ));
        }
        Ok(c)
    }

    /// Pixels per latent along each axis (8 for SD).
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// `UNetMidBlock2D`: resnet, single-head self-attention over pixels, resnet.
struct MidBlock {
    resnets: [ResnetBlock2D; 2],
    attention: Option<(GroupNorm, Attention)>,
}

impl MidBlock {
    fn load(s: &Scope, c: &VaeConfig, ch: usize) -> Result<Self> {
        let resnet = |name: &str| ResnetBlock2D::load(&s.at(name), &resnet_spec(c, ch, ch));
        let attention = if c.mid_block_add_attention {
            let a = s.at("attentions.0");
            // Older checkpoints (and candle's tests) call these query/key/value/proj_attn.
            let proj = |names: &[&str]| -> Result<Linear> {
                let name = names
                    .iter()
                    .find(|n| a.contains(&format!("{n}.weight")))
                    .unwrap_or(&names[0]);
                Linear::load(&a.at(name), ch, ch, true)
            };
            Some((
                GroupNorm::load(&a.at("group_norm"), c.norm_num_groups, ch, 1e-6)?,
                Attention {
                    to_q: proj(&["to_q", "query"])?,
                    to_k: proj(&["to_k", "key"])?,
                    to_v: proj(&["to_v", "value"])?,
                    to_out: proj(&["to_out.0", "proj_attn"])?,
                    heads: 1,
                },
            ))
        } else {
            None
        };
        Ok(Self {
            resnets: [resnet("resnets.0")?, resnet("resnets.1")?],
            attention,
        })
    }

    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let mut h = self.resnets[0].forward(x, None)?;
        if let Some((norm, attn)) = &self.attention {
            let (b, c, hh, ww) = h.dims4()?;
            let tokens = norm
                .forward(&h)?
                .reshape((b, c, hh * ww))?
                .transpose(1, 2)?;
            let out = attn.forward(&tokens, None, None)?;
            h = (out.transpose(1, 2)?.reshape((b, c, hh, ww))? + h)?;
        }
        self.resnets[1].forward(&h, None)
    }
}

fn resnet_spec(c: &VaeConfig, in_ch: usize, out_ch: usize) -> ResnetSpec {
    ResnetSpec {
        in_ch,
        out_ch,
        temb_ch: None,
        groups: c.norm_num_groups,
        eps: 1e-6,
        output_scale: 1.0,
    }
}

struct Encoder {
    conv_in: Conv2d,
    blocks: Vec<(Vec<ResnetBlock2D>, Option<Downsample2D>)>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    blocks: Vec<(Vec<ResnetBlock2D>, Option<Upsample2D>)>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// The latent Gaussian the encoder predicts (after `quant_conv`), per pixel of the latent.
pub struct LatentDist {
    pub mean: Tensor,
    /// Clamped to [−30, 20] as in diffusers.
    pub logvar: Tensor,
}

impl LatentDist {
    /// `mean + σ·noise` for a noise tensor of the mean's shape.
    pub fn sample(&self, noise: &Tensor) -> CResult<Tensor> {
        &self.mean + (self.logvar.affine(0.5, 0.0)?.exp()? * noise)?
    }
}

pub struct AutoencoderKL {
    pub config: VaeConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
}

impl AutoencoderKL {
    pub fn load(config: VaeConfig, weights: &Weights) -> Result<Self> {
        let s = weights.root();
        let c = &config;
        let ch = &c.block_out_channels;
        let n = ch.len();
        let last = ch[n - 1];
        let z = c.latent_channels;

        let e = s.at("encoder");
        let mut enc_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let b = e.at(format!("down_blocks.{i}"));
            let in_ch = if i == 0 { ch[0] } else { ch[i - 1] };
            let resnets = (0..c.layers_per_block)
                .map(|j| {
                    let r_in = if j == 0 { in_ch } else { ch[i] };
                    ResnetBlock2D::load(&b.at(format!("resnets.{j}")), &resnet_spec(c, r_in, ch[i]))
                })
                .collect::<Result<Vec<_>>>()?;
            let down = (i + 1 < n)
                .then(|| Downsample2D::load(&b.at("downsamplers.0"), ch[i], 0))
                .transpose()?;
            enc_blocks.push((resnets, down));
        }
        let encoder = Encoder {
            conv_in: Conv2d::load(&e.at("conv_in"), c.in_channels, ch[0], 3, 1, 1)?,
            blocks: enc_blocks,
            mid: MidBlock::load(&e.at("mid_block"), c, last)?,
            norm_out: GroupNorm::load(&e.at("conv_norm_out"), c.norm_num_groups, last, 1e-6)?,
            conv_out: Conv2d::load(&e.at("conv_out"), last, 2 * z, 3, 1, 1)?,
        };

        let d = s.at("decoder");
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut dec_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let b = d.at(format!("up_blocks.{i}"));
            let in_ch = if i == 0 { rev[0] } else { rev[i - 1] };
            let resnets = (0..=c.layers_per_block)
                .map(|j| {
                    let r_in = if j == 0 { in_ch } else { rev[i] };
                    ResnetBlock2D::load(
                        &b.at(format!("resnets.{j}")),
                        &resnet_spec(c, r_in, rev[i]),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let up = (i + 1 < n)
                .then(|| Upsample2D::load(&b.at("upsamplers.0"), rev[i]))
                .transpose()?;
            dec_blocks.push((resnets, up));
        }
        let decoder = Decoder {
            conv_in: Conv2d::load(&d.at("conv_in"), z, last, 3, 1, 1)?,
            mid: MidBlock::load(&d.at("mid_block"), c, last)?,
            blocks: dec_blocks,
            norm_out: GroupNorm::load(&d.at("conv_norm_out"), c.norm_num_groups, ch[0], 1e-6)?,
            conv_out: Conv2d::load(&d.at("conv_out"), ch[0], c.out_channels, 3, 1, 1)?,
        };

        Ok(Self {
            quant_conv: c
                .use_quant_conv
                .then(|| Conv2d::load(&s.at("quant_conv"), 2 * z, 2 * z, 1, 1, 0))
                .transpose()?,
            post_quant_conv: c
                .use_post_quant_conv
                .then(|| Conv2d::load(&s.at("post_quant_conv"), z, z, 1, 1, 0))
                .transpose()?,
            encoder,
            decoder,
            config,
        })
    }

    pub fn device(&self) -> &candle_core::Device {
        self.encoder.conv_in.weight().device()
    }

    pub fn dtype(&self) -> candle_core::DType {
        self.encoder.conv_in.weight().dtype()
    }

    /// Encodes images in [−1, 1] (B × 3 × H × W) to the latent distribution (unscaled).
    pub fn encode(&self, images: &Tensor) -> CResult<LatentDist> {
        let e = &self.encoder;
        let mut h = e.conv_in.forward(images)?;
        for (resnets, down) in &e.blocks {
            for r in resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(down) = down {
                h = down.forward(&h)?;
            }
        }
        h = e.mid.forward(&h)?;
        h = e.conv_out.forward(&e.norm_out.forward(&h)?.silu()?)?;
        if let Some(q) = &self.quant_conv {
            h = q.forward(&h)?;
        }
        let z = self.config.latent_channels;
        Ok(LatentDist {
            mean: h.narrow(1, 0, z)?,
            logvar: h.narrow(1, z, z)?.clamp(-30f32, 20f32)?,
        })
    }

    /// Decodes unscaled latents (B × z × h × w) to images in roughly [−1, 1].
    pub fn decode(&self, latents: &Tensor) -> CResult<Tensor> {
        let d = &self.decoder;
        let mut h = match &self.post_quant_conv {
            Some(p) => p.forward(latents)?,
            None => latents.clone(),
        };
        h = d.conv_in.forward(&h)?;
        h = d.mid.forward(&h)?;
        for (resnets, up) in &d.blocks {
            for r in resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(up) = up {
                h = up.forward(&h, None)?;
            }
        }
        d.conv_out.forward(&d.norm_out.forward(&h)?.silu()?)
    }
}
