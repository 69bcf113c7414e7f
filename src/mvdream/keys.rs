//! Where each tensor of an official MVDream checkpoint (a whole `LatentDiffusionInterface`
//! state dict) goes: the UNet (`model.diffusion_model.*`, LDM names), the VAE
//! (`first_stage_model.*`, LDM names) and the OpenCLIP text tower (`cond_stage_model.model.*`),
//! each renamed to ours (diffusers / transformers names).

use crate::weights::ldm_unet::LdmUNetShape;

/// The three networks of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Unet,
    Vae,
    TextEncoder,
}

/// What becomes of one checkpoint tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Our name in `Component`, reshaped to `shape` when given (1×1 convolutions that are
    /// linear layers in ours).
    Tensor {
        component: Component,
        name: String,
        shape: Option<Vec<usize>>,
    },
    /// OpenCLIP's packed q|k|v projection: rows split in three, one per name.
    SplitRows {
        component: Component,
        names: [String; 3],
    },
    /// Part of the checkpoint MVDream never uses (the noise-schedule buffers, the last text
    /// layer in "penultimate" mode, the contrastive projection).
    Unused,
}

/// What the name mapping depends on.
#[derive(Debug, Clone)]
pub struct CheckpointShape {
    pub unet: LdmUNetShape,
    /// VAE resolution levels.
    pub vae_levels: usize,
    /// Text-tower layers the model runs (the rest are unused).
    pub text_layers_used: usize,
}

pub const UNET_PREFIX: &str = "model.diffusion_model.";
pub const VAE_PREFIX: &str = "first_stage_model.";
pub const TEXT_PREFIX: &str = "cond_stage_model.model.";

/// Top-level buffers of `LatentDiffusion` (the schedule is rebuilt from the config).
const SCHEDULE_BUFFERS: &[&str] = &[
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
];

fn tensor(component: Component, name: String) -> Option<Destination> {
    Some(Destination::Tensor {
        component,
        name,
        shape: None,
    })
}

impl CheckpointShape {
    /// Where checkpoint tensor `key` of shape `shape` goes; `None` for names that do not belong
    /// to a checkpoint of this shape (strict loading reports them).
    pub fn destination(&self, key: &str, shape: &[usize]) -> Option<Destination> {
        if SCHEDULE_BUFFERS.contains(&key) {
            return Some(Destination::Unused);
        }
        if let Some(k) = key.strip_prefix(UNET_PREFIX) {
            return tensor(Component::Unet, self.unet.diffusers_key(k)?);
        }
        if let Some(k) = key.strip_prefix(VAE_PREFIX) {
            let name = vae_key(k, self.vae_levels)?;
            let linear = name.contains("attentions.0.to_") && shape.len() == 4;
            return Some(Destination::Tensor {
                component: Component::Vae,
                name,
                shape: linear.then(|| shape[..2].to_vec()),
            });
        }
        self.text_destination(key.strip_prefix(TEXT_PREFIX)?)
    }

    fn text_destination(&self, key: &str) -> Option<Destination> {
        let parts: Vec<&str> = key.split('.').collect();
        let t = Component::TextEncoder;
        let name = match parts.as_slice() {
            ["token_embedding", "weight"] => "embeddings.token_embedding.weight".to_string(),
            ["positional_embedding"] => "embeddings.position_embedding.weight".to_string(),
            ["ln_final", p] => format!("final_layer_norm.{p}"),
            ["text_projection"] | ["logit_scale"] => return Some(Destination::Unused),
            ["transformer", "resblocks", i, rest @ ..] => {
                let i: usize = i.parse().ok()?;
                if i >= self.text_layers_used {
                    return Some(Destination::Unused);
                }
                let layer = format!("encoder.layers.{i}");
                let sub = match rest {
                    ["attn", "in_proj_weight"] | ["attn", "in_proj_bias"] => {
                        let p = if rest[1].ends_with("weight") {
                            "weight"
                        } else {
                            "bias"
                        };
                        return Some(Destination::SplitRows {
                            component: t,
                            names: ["q_proj", "k_proj", "v_proj"]
                                .map(|n| format!("{layer}.self_attn.{n}.{p}")),
                        });
                    }
                    ["attn", "out_proj", p] => format!("self_attn.out_proj.{p}"),
                    ["ln_1", p] => format!("layer_norm1.{p}"),
                    ["ln_2", p] => format!("layer_norm2.{p}"),
                    ["mlp", "c_fc", p] => format!("mlp.fc1.{p}"),
                    ["mlp", "c_proj", p] => format!("mlp.fc2.{p}"),
                    _ => return None,
                };
                format!("{layer}.{sub}")
            }
            _ => return None,
        };
        tensor(t, name)
    }
}

/// Our name for an LDM `AutoencoderKL` tensor (without `first_stage_model.`).
pub fn vae_key(key: &str, levels: usize) -> Option<String> {
    let parts: Vec<&str> = key.split('.').collect();
    let resnet = |prefix: String, rest: &[&str]| -> Option<String> {
        let sub = match rest {
            ["nin_shortcut", p] => format!("conv_shortcut.{p}"),
            [n @ ("norm1" | "norm2" | "conv1" | "conv2"), p] => format!("{n}.{p}"),
            _ => return None,
        };
        Some(format!("{prefix}.{sub}"))
    };
    let mid = |coder: &str, rest: &[&str]| -> Option<String> {
        match rest {
            ["block_1", r @ ..] => resnet(format!("{coder}.mid_block.resnets.0"), r),
            ["block_2", r @ ..] => resnet(format!("{coder}.mid_block.resnets.1"), r),
            ["attn_1", n, p] => {
                let ours = match *n {
                    "norm" => "group_norm",
                    "q" => "to_q",
                    "k" => "to_k",
                    "v" => "to_v",
                    "proj_out" => "to_out.0",
                    _ => return None,
                };
                Some(format!("{coder}.mid_block.attentions.0.{ours}.{p}"))
            }
            _ => None,
        }
    };
    let number = |s: &str| s.parse::<usize>().ok().filter(|&i| i < levels);
    match parts.as_slice() {
        [p @ ("quant_conv" | "post_quant_conv"), w] => Some(format!("{p}.{w}")),
        ["encoder" | "decoder", "conv_in" | "conv_out", _] => Some(key.to_string()),
        [coder @ ("encoder" | "decoder"), "norm_out", p] => {
            Some(format!("{coder}.conv_norm_out.{p}"))
        }
        [coder @ ("encoder" | "decoder"), "mid", rest @ ..] => mid(coder, rest),
        ["encoder", "down", i, "block", j, rest @ ..] => resnet(
            format!("encoder.down_blocks.{}.resnets.{j}", number(i)?),
            rest,
        ),
        ["encoder", "down", i, "downsample", "conv", p] => Some(format!(
            "encoder.down_blocks.{}.downsamplers.0.conv.{p}",
            number(i)?
        )),
        // The decoder's `up` list runs from the lowest resolution: reversed against ours.
        ["decoder", "up", i, "block", j, rest @ ..] => {
            let u = levels - 1 - number(i)?;
            resnet(format!("decoder.up_blocks.{u}.resnets.{j}"), rest)
        }
        ["decoder", "up", i, "upsample", "conv", p] => {
            let u = levels - 1 - number(i)?;
            Some(format!("decoder.up_blocks.{u}.upsamplers.0.conv.{p}"))
        }
        _ => None,
    }
}
