//! The official MVDream YAML configuration (`model.params.unet_config.params`,
//! `first_stage_config.params.ddconfig`, `cond_stage_config.params`) read into our
//! architecture, for checkpoints of another size than `sd-v2-base.yaml`.

use super::{MvUNetParams, MvdreamArchitecture};
use crate::error::{Error, Result};
use crate::models::{ClipTextConfig, VaeConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

/// OpenCLIP text-tower sizes (`text_cfg` of open_clip's model configs).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct OpenClipText {
    pub width: usize,
    pub heads: usize,
    pub layers: usize,
    #[serde(default = "context_length")]
    pub context_length: usize,
    #[serde(default = "vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "mlp_ratio")]
    pub mlp_ratio: f64,
}

fn context_length() -> usize {
    77
}
fn vocab_size() -> usize {
    49408
}
fn mlp_ratio() -> f64 {
    4.0
}

/// OpenCLIP ViT-H-14, the text tower of SD 2.x and MVDream.
pub fn vit_h_14() -> OpenClipText {
    OpenClipText {
        width: 1024,
        heads: 16,
        layers: 24,
        context_length: 77,
        vocab_size: 49408,
        mlp_ratio: 4.0,
    }
}

/// A YAML value as JSON (for serde): numbers stay numbers, keys become strings.
fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .map_or(Value::String(s.clone()), Value::from),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null | Yaml::Alias(_) | Yaml::BadValue => Value::Null,
    }
}

/// The configuration for `checkpoint`: `explicit` when given, else `<stem>.yaml` beside it,
/// else `None` (the built-in `sd-v2-base.yaml` architecture).
pub fn config_path(checkpoint: &Path, explicit: Option<&Path>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| Some(checkpoint.with_extension("yaml")).filter(|p| p.is_file()))
}

impl MvdreamArchitecture {
    /// The architecture of `checkpoint`, from the YAML [`config_path`] finds, else the built-in
    /// `sd-v2-base.yaml` one; with the YAML file read, if any.
    pub fn for_checkpoint(
        checkpoint: &Path,
        explicit: Option<&Path>,
    ) -> Result<(Self, Option<PathBuf>)> {
        match config_path(checkpoint, explicit) {
            Some(yaml) => Ok((Self::from_yaml(&yaml, checkpoint)?, Some(yaml))),
            None => Ok((Self::default(), None)),
        }
    }

    /// Reads an official-format YAML file. An OpenCLIP architecture other than ViT-H-14 is
    /// read from `<arch>.json` (open_clip's model config) beside the YAML file, else beside
    /// `checkpoint`.
    pub fn from_yaml(path: &Path, checkpoint: &Path) -> Result<Self> {
        let bad = |reason: String| Error::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let docs = YamlLoader::load_from_str(&text).map_err(|e| bad(format!("YAML: {e}")))?;
        let root = to_json(docs.first().ok_or_else(|| bad("empty file".into()))?);
        let params = &root["model"]["params"];
        let section = |name: &str| -> Result<&Value> {
            let v = &params[name]["params"];
            if v.is_null() {
                return Err(bad(format!("no model.params.{name}.params")));
            }
            Ok(v)
        };
        let unet: MvUNetParams = serde_json::from_value(section("unet_config")?.clone())
            .map_err(|e| bad(format!("unet_config.params: {e}")))?;
        let dd = &section("first_stage_config")?["ddconfig"];
        let number = |v: &Value, what: &str| -> Result<usize> {
            v.as_u64().map(|n| n as usize).ok_or_else(|| {
                bad(format!(
                    "first_stage_config.params.ddconfig.{what} is missing"
                ))
            })
        };
        let ch = number(&dd["ch"], "ch")?;
        let mult: Vec<usize> = serde_json::from_value(dd["ch_mult"].clone())
            .map_err(|e| bad(format!("ddconfig.ch_mult: {e}")))?;
        let levels = mult.len();
        let vae: VaeConfig = serde_json::from_value(serde_json::json!({
            "in_channels": number(&dd["in_channels"], "in_channels")?,
            "out_channels": number(&dd["out_ch"], "out_ch")?,
            "block_out_channels": mult.iter().map(|m| m * ch).collect::<Vec<_>>(),
            "down_block_types": vec!["DownEncoderBlock2D"; levels],
            "up_block_types": vec!["UpDecoderBlock2D"; levels],
            "layers_per_block": number(&dd["num_res_blocks"], "num_res_blocks")?,
            "latent_channels": number(&dd["z_channels"], "z_channels")?,
            "scaling_factor": params["scale_factor"].as_f64().unwrap_or(0.18215),
        }))
        .map_err(|e| bad(format!("first_stage_config: {e}")))?;
        let cond = section("cond_stage_config").unwrap_or(&Value::Null);
        let arch = cond["arch"].as_str().unwrap_or("ViT-H-14");
        let tower = match arch {
            "ViT-H-14" => vit_h_14(),
            other => {
                let file = format!("{other}.json");
                let mut places = vec![path.with_file_name(&file)];
                let beside_checkpoint = checkpoint.with_file_name(&file);
                if beside_checkpoint != places[0] {
                    places.push(beside_checkpoint);
                }
                let json = places.iter().find(|p| p.is_file()).ok_or_else(|| {
                    let searched: Vec<String> =
                        places.iter().map(|p| p.display().to_string()).collect();
                    bad(format!(
                        "text tower `{other}` is not built in (ViT-H-14 is): put open_clip's {file} beside the config or the checkpoint (looked for {})",
                        searched.join(" and ")
                    ))
                })?;
                let cfg: Value = crate::models::config::read_json(json)?;
                serde_json::from_value(cfg["text_cfg"].clone())
                    .map_err(|e| bad(format!("{}: text_cfg: {e}", json.display())))?
            }
        };
        let layers = match cond["layer"].as_str().unwrap_or("penultimate") {
            "penultimate" => tower.layers - 1,
            "last" => tower.layers,
            other => {
                return Err(bad(format!(
                    "cond_stage_config layer `{other}`: use penultimate or last"
                )))
            }
        };
        Ok(Self {
            unet,
            vae,
            text: ClipTextConfig {
                vocab_size: tower.vocab_size,
                hidden_size: tower.width,
                intermediate_size: (tower.width as f64 * tower.mlp_ratio) as usize,
                num_attention_heads: tower.heads,
                num_hidden_layers: layers,
                max_position_embeddings: tower.context_length,
                hidden_act: "gelu".into(),
                layer_norm_eps: 1e-5,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_the_explicit_one_else_the_checkpoints_namesake_else_built_in() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = dir.path().join("tiny-4view.pt");
        let explicit = dir.path().join("other/arch.yaml");
        assert_eq!(config_path(&checkpoint, None), None);
        let (arch, yaml) = MvdreamArchitecture::for_checkpoint(&checkpoint, None).unwrap();
        assert_eq!(yaml, None);
        assert_eq!(arch.unet, MvUNetParams::default());

        let namesake = dir.path().join("tiny-4view.yaml");
        std::fs::write(&namesake, "").unwrap();
        assert_eq!(config_path(&checkpoint, None), Some(namesake));
        assert_eq!(
            config_path(&checkpoint, Some(&explicit)),
            Some(explicit.clone()),
            "an explicit config wins over the namesake"
        );
    }
}
