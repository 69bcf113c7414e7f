//! Tensor names of original LDM UNet checkpoints (Stable Diffusion's `model.diffusion_model.*`,
//! MVDream's `MultiViewUNetModel`) mapped to ours, which are diffusers' names. The mapping
//! follows from the block structure alone, so it is derived from the architecture rather than
//! listed.

/// What the LDM block numbering depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdmUNetShape {
    /// Resolution levels (`channel_mult` entries).
    pub levels: usize,
    /// ResNet blocks per down level (up levels have one more).
    pub res_blocks: usize,
    /// Whether down level `i` has transformers (`attention_resolutions`).
    pub attention: Vec<bool>,
}

/// ResNet sub-module names: LDM's `nn.Sequential` indices to diffusers' names.
fn resnet(prefix: &str, parts: &[&str]) -> Option<String> {
    let (name, rest) = match parts {
        ["in_layers", "0", rest @ ..] => ("norm1", rest),
        ["in_layers", "2", rest @ ..] => ("conv1", rest),
        ["emb_layers", "1", rest @ ..] => ("time_emb_proj", rest),
        ["out_layers", "0", rest @ ..] => ("norm2", rest),
        ["out_layers", "3", rest @ ..] => ("conv2", rest),
        ["skip_connection", rest @ ..] => ("conv_shortcut", rest),
        _ => return None,
    };
    Some(join(&format!("{prefix}.{name}"), rest))
}

fn join(prefix: &str, rest: &[&str]) -> String {
    if rest.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{}", rest.join("."))
    }
}

impl LdmUNetShape {
    /// Our name for LDM UNet tensor `key` (without `model.diffusion_model.`), or `None` when
    /// the name does not belong to a UNet of this shape. `camera_embed.*` keeps its name.
    pub fn diffusers_key(&self, key: &str) -> Option<String> {
        let parts: Vec<&str> = key.split('.').collect();
        let per_down = self.res_blocks + 1;
        let number = |s: &str| s.parse::<usize>().ok();
        match parts.as_slice() {
            ["time_embed", "0", rest @ ..] => Some(join("time_embedding.linear_1", rest)),
            ["time_embed", "2", rest @ ..] => Some(join("time_embedding.linear_2", rest)),
            ["camera_embed", "0" | "2", ..] => Some(key.to_string()),
            ["out", "0", rest @ ..] => Some(join("conv_norm_out", rest)),
            ["out", "2", rest @ ..] => Some(join("conv_out", rest)),
            ["input_blocks", "0", "0", rest @ ..] => Some(join("conv_in", rest)),
            ["input_blocks", n, m, rest @ ..] => {
                let n = number(n)?.checked_sub(1)?;
                let (level, j) = (n / per_down, n % per_down);
                if level >= self.levels {
                    return None;
                }
                match (j < self.res_blocks, *m) {
                    (true, "0") => resnet(&format!("down_blocks.{level}.resnets.{j}"), rest),
                    (true, "1") if self.attention[level] => {
                        Some(join(&format!("down_blocks.{level}.attentions.{j}"), rest))
                    }
                    (false, "0") if level + 1 < self.levels => match rest {
                        ["op", rest @ ..] => Some(join(
                            &format!("down_blocks.{level}.downsamplers.0.conv"),
                            rest,
                        )),
                        _ => None,
                    },
                    _ => None,
                }
            }
            ["middle_block", "0", rest @ ..] => resnet("mid_block.resnets.0", rest),
            ["middle_block", "1", rest @ ..] => Some(join("mid_block.attentions.0", rest)),
            ["middle_block", "2", rest @ ..] => resnet("mid_block.resnets.1", rest),
            ["output_blocks", n, m, rest @ ..] => {
                let n = number(n)?;
                let (up, j) = (n / per_down, n % per_down);
                if up >= self.levels {
                    return None;
                }
                let attention = self.attention[self.levels - 1 - up];
                // The upsampler follows the level's last ResNet (and transformer, if any).
                let upsampler = (j == self.res_blocks && up + 1 < self.levels)
                    .then_some(if attention { "2" } else { "1" });
                match *m {
                    "0" => resnet(&format!("up_blocks.{up}.resnets.{j}"), rest),
                    "1" if attention => Some(join(&format!("up_blocks.{up}.attentions.{j}"), rest)),
                    m if Some(m) == upsampler => match rest {
                        ["conv", rest @ ..] => {
                            Some(join(&format!("up_blocks.{up}.upsamplers.0.conv"), rest))
                        }
                        _ => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        }
    }
}
