//! MVDream's architecture in its own terms (`MultiViewUNetModel` keyword arguments, the
//! `unet_config.params` of the official YAML) and its translation to our UNet configuration.

use crate::error::{Error, Result};
use crate::models::unet::UNetLayout;
use crate::models::UNetConfig;
use crate::weights::ldm_unet::LdmUNetShape;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `MultiViewUNetModel` parameters (official `sd-v2-base.yaml` by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MvUNetParams {
    pub image_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub model_channels: usize,
    /// Downsampling factors at which levels have transformers.
    pub attention_resolutions: Vec<usize>,
    pub num_res_blocks: usize,
    pub channel_mult: Vec<usize>,
    #[serde(default = "minus_one")]
    pub num_head_channels: i64,
    #[serde(default = "minus_one")]
    pub num_heads: i64,
    #[serde(default)]
    pub use_spatial_transformer: bool,
    #[serde(default)]
    pub use_linear_in_transformer: bool,
    #[serde(default = "one")]
    pub transformer_depth: usize,
    pub context_dim: usize,
    #[serde(default)]
    pub use_checkpoint: bool,
    #[serde(default)]
    pub legacy: bool,
    pub camera_dim: Option<usize>,
}

fn minus_one() -> i64 {
    -1
}

fn one() -> usize {
    1
}

impl Default for MvUNetParams {
    /// `mvdream/configs/sd-v2-base.yaml`.
    fn default() -> Self {
        Self {
            image_size: 32,
            in_channels: 4,
            out_channels: 4,
            model_channels: 320,
            attention_resolutions: vec![4, 2, 1],
            num_res_blocks: 2,
            channel_mult: vec![1, 2, 4, 4],
            num_head_channels: 64,
            num_heads: -1,
            use_spatial_transformer: true,
            use_linear_in_transformer: true,
            transformer_depth: 1,
            context_dim: 1024,
            use_checkpoint: false,
            legacy: false,
            camera_dim: Some(16),
        }
    }
}

impl MvUNetParams {
    fn attention(&self) -> Vec<bool> {
        (0..self.channel_mult.len())
            .map(|i| self.attention_resolutions.contains(&(1 << i)))
            .collect()
    }

    /// How the checkpoint numbers its blocks.
    pub fn ldm_shape(&self) -> LdmUNetShape {
        LdmUNetShape {
            levels: self.channel_mult.len(),
            res_blocks: self.num_res_blocks,
            attention: self.attention(),
        }
    }

    /// The same network as our (diffusers-style) UNet configuration; `source` names the file
    /// the parameters came from in messages.
    pub fn unet_config(&self, source: &Path) -> Result<(UNetConfig, UNetLayout)> {
        let bad = |reason: String| Error::BadConfig {
            path: source.to_path_buf(),
            reason,
        };
        if !self.use_spatial_transformer || self.legacy {
            return Err(bad(
                "only use_spatial_transformer: true, legacy: false UNets (MVDream's) are supported"
                    .into(),
            ));
        }
        let channels: Vec<usize> = self
            .channel_mult
            .iter()
            .map(|m| m * self.model_channels)
            .collect();
        let heads = channels
            .iter()
            .map(|c| match (self.num_head_channels, self.num_heads) {
                (d, _) if d > 0 => Ok(c / d as usize),
                (_, h) if h > 0 => Ok(h as usize),
                _ => Err(bad("set num_head_channels or num_heads".into())),
            })
            .collect::<Result<Vec<_>>>()?;
        let attention = self.attention();
        let kind = |a: bool, cross: &str, plain: &str| if a { cross } else { plain }.to_string();
        let json = serde_json::json!({
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "block_out_channels": channels,
            "down_block_types": attention.iter().map(|&a| kind(a, "CrossAttnDownBlock2D", "DownBlock2D")).collect::<Vec<_>>(),
            "up_block_types": attention.iter().rev().map(|&a| kind(a, "CrossAttnUpBlock2D", "UpBlock2D")).collect::<Vec<_>>(),
            "layers_per_block": self.num_res_blocks,
            "attention_head_dim": heads,
            "cross_attention_dim": self.context_dim,
            "use_linear_projection": self.use_linear_in_transformer,
            "transformer_layers_per_block": self.transformer_depth,
            "norm_num_groups": 32,
            "norm_eps": 1e-5,
            "flip_sin_to_cos": true,
            "freq_shift": 0,
            "sample_size": self.image_size,
            "camera_dim": self.camera_dim,
        });
        let config: UNetConfig =
            serde_json::from_value(json).map_err(|e| bad(format!("UNet parameters: {e}")))?;
        let layout = config.validate(source)?;
        Ok((config, layout))
    }
}
