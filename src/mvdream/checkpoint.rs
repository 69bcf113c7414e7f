//! The official MVDream checkpoint (`sd-v2.1-base-4view.pt`, or the same tensors as
//! safetensors): read, split into UNet, VAE and text encoder under our names, loaded strictly.

use super::keys::{CheckpointShape, Component, Destination};
use super::MvUNetParams;
use crate::diffusion::NoiseSchedule;
use crate::error::{Error, Result};
use crate::models::{
    AutoencoderKL, ClipTextConfig, ClipTextModel, UNet2DConditionModel, VaeConfig,
};
use crate::tokenizer::ClipTokenizer;
use crate::weights::{hub, Lookup, Weights};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The three networks' architectures (official `sd-v2-base.yaml` by default).
#[derive(Debug, Clone)]
pub struct MvdreamArchitecture {
    pub unet: MvUNetParams,
    pub vae: VaeConfig,
    /// The text encoder as MVDream runs it ("penultimate": all layers but the last).
    pub text: ClipTextConfig,
}

impl Default for MvdreamArchitecture {
    fn default() -> Self {
        // SD 2.1-base's VAE, and OpenCLIP ViT-H-14's text tower without its last layer.
        Self {
            unet: MvUNetParams::default(),
            vae: built_in(include_str!("../../assets/configs/sd21-base/vae.json")),
            text: built_in(include_str!(
                "../../assets/configs/sd21-base/text_encoder.json"
            )),
        }
    }
}

fn built_in<T: serde::de::DeserializeOwned>(json: &str) -> T {
    serde_json::from_str(json).expect("built-in config parses")
}

impl MvdreamArchitecture {
    pub fn checkpoint_shape(&self) -> CheckpointShape {
        CheckpointShape {
            unet: self.unet.ldm_shape(),
            vae_levels: self.vae.block_out_channels.len(),
            text_layers_used: self.text.num_hidden_layers,
        }
    }
}

/// The official checkpoint's file names, the faster-loading copy first.
pub const CHECKPOINT_FILES: [&str; 2] = ["sd-v2.1-base-4view.safetensors", "sd-v2.1-base-4view.pt"];

/// Finds the checkpoint for `model`: a file; a folder holding one of [`CHECKPOINT_FILES`]; or a
/// hub repo id, looked up in the HF cache and downloaded unless offline.
pub fn find_checkpoint(lookup: &Lookup, model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let in_folder = |dir: &Path| {
        CHECKPOINT_FILES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
    };
    let mut searched = vec![path.display().to_string()];
    if path.is_dir() {
        return in_folder(path).ok_or_else(|| Error::MissingFile {
            path: path.join(CHECKPOINT_FILES[1]),
            what: "MVDream checkpoint".into(),
        });
    }
    if model.split('/').count() == 2 {
        let repo = hub::repo_dir(&lookup.cache, model);
        searched.push(format!("{} (revision {})", repo.display(), lookup.revision));
        if let Some(found) = hub::snapshot_dir(&lookup.cache, model, &lookup.revision)
            .as_deref()
            .and_then(in_folder)
        {
            return Ok(found);
        }
        if !lookup.offline {
            return hub::Downloader::new(&lookup.cache, model, &lookup.revision)?
                .get(CHECKPOINT_FILES[1]);
        }
    }
    Err(Error::ModelNotFound {
        model: model.into(),
        searched: searched.iter().map(|s| format!("  {s}")).collect::<Vec<_>>().join("\n"),
        fetch: format!(
            "dream3d sample --mvdream {model} --prompt \"a chair\"   (online, without HF_HUB_OFFLINE), or pass the checkpoint file"
        ),
    })
}

/// Every tensor of a checkpoint: safetensors, or a PyTorch pickle holding the state dict
/// itself or under `state_dict` (Lightning's layout).
pub fn read_state_dict(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    if !path.is_file() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            what: "MVDream checkpoint".into(),
        });
    }
    let corrupt = |e: candle_core::Error| Error::CorruptWeights {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let tensors = if path.extension().is_some_and(|e| e == "safetensors") {
        candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(corrupt)?
            .into_iter()
            .collect()
    } else {
        match candle_core::pickle::read_all(path) {
            Ok(flat) if !flat.is_empty() => flat,
            _ => {
                candle_core::pickle::read_all_with_key(path, Some("state_dict")).map_err(corrupt)?
            }
        }
        .into_iter()
        .collect()
    };
    Ok(tensors)
}

/// The checkpoint's tensors per network under our names, checked strictly: a tensor no
/// network takes is an error that lists it.
pub fn split_state_dict(
    tensors: BTreeMap<String, Tensor>,
    shape: &CheckpointShape,
    path: &Path,
) -> Result<BTreeMap<Component, BTreeMap<String, Tensor>>> {
    let mut parts: BTreeMap<Component, BTreeMap<String, Tensor>> = BTreeMap::new();
    let mut unknown = vec![];
    for (key, t) in tensors {
        match shape.destination(&key, t.dims()) {
            Some(Destination::Tensor {
                component,
                name,
                shape,
            }) => {
                let t = match shape {
                    Some(s) => t.reshape(s)?,
                    None => t,
                };
                parts.entry(component).or_default().insert(name, t);
            }
            Some(Destination::SplitRows { component, names }) => {
                let rows = t.dim(0)? / 3;
                let part = parts.entry(component).or_default();
                for (i, name) in names.into_iter().enumerate() {
                    part.insert(name, t.narrow(0, i * rows, rows)?.contiguous()?);
                }
            }
            Some(Destination::Unused) => {}
            None => unknown.push(key),
        }
    }
    if !unknown.is_empty() {
        return Err(Error::UnexpectedTensors {
            path: path.to_path_buf(),
            names: unknown.join(", "),
        });
    }
    Ok(parts)
}

/// MVDream's networks, tokenizer and noise schedule.
pub struct MvdreamModel {
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub text_encoder: ClipTextModel,
    pub tokenizer: ClipTokenizer,
    pub schedule: NoiseSchedule,
}

/// MVDream as [`MvdreamModel::load_named`] found it.
pub struct LoadedMvdream {
    pub model: MvdreamModel,
    pub checkpoint: PathBuf,
    /// The YAML file its architecture came from (none: sd-v2-base's, built in).
    pub yaml: Option<PathBuf>,
}

impl MvdreamModel {
    /// Finds and loads MVDream: `name` is a checkpoint file, a folder or a hub repo id; the
    /// architecture comes from `config`, else a YAML beside the checkpoint, else sd-v2-base's.
    pub fn load_named(
        lookup: &Lookup,
        name: &str,
        config: Option<&Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<LoadedMvdream> {
        let checkpoint = find_checkpoint(lookup, name)?;
        let (arch, yaml) = MvdreamArchitecture::for_checkpoint(&checkpoint, config)?;
        let model = Self::load(&checkpoint, &arch, dtype, device)?;
        Ok(LoadedMvdream {
            model,
            checkpoint,
            yaml,
        })
    }

    pub fn load(
        path: &Path,
        arch: &MvdreamArchitecture,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::from_state_dict(read_state_dict(path)?, arch, path, dtype, device)
    }

    /// The networks from a checkpoint's tensors (`path` names it in messages).
    pub fn from_state_dict(
        tensors: BTreeMap<String, Tensor>,
        arch: &MvdreamArchitecture,
        path: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut parts = split_state_dict(tensors, &arch.checkpoint_shape(), path)?;
        let mut take = |c: Component| -> Result<Weights> {
            let tensors = parts
                .remove(&c)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, t)| Ok((k, t.to_dtype(dtype)?.to_device(device)?)))
                .collect::<Result<BTreeMap<_, _>>>()?;
            Ok(Weights::from_tensors(path, tensors))
        };
        let unet_weights = take(Component::Unet)?;
        let vae_weights = take(Component::Vae)?;
        let text_weights = take(Component::TextEncoder)?;
        let (unet_config, layout) = arch.unet.unet_config(path)?;
        let unet = UNet2DConditionModel::load(unet_config, layout, &unet_weights)?;
        let vae = AutoencoderKL::load(arch.vae.clone(), &vae_weights)?;
        let text_encoder = ClipTextModel::load(arch.text.clone(), path, &text_weights)?;
        for w in [&unet_weights, &vae_weights, &text_weights] {
            w.check_all_used()?;
        }
        Ok(Self {
            unet,
            vae,
            text_encoder,
            tokenizer: ClipTokenizer::bundled()?,
            schedule: noise_schedule()?,
        })
    }
}

/// MVDream's noise schedule: SD 2.1-base's scaled-linear one (β 0.00085 → 0.012).
pub fn noise_schedule() -> Result<NoiseSchedule> {
    NoiseSchedule::from_config(
        &built_in(include_str!(
            "../../assets/configs/sd21-base/scheduler.json"
        )),
        Path::new("<built-in SD 2.1-base scheduler>"),
    )
}
