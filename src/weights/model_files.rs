//! Finding the files of a Stable Diffusion model: a local diffusers folder, or a hub repo id
//! looked up in the HF cache (offline first) and downloaded when allowed.

use super::hub;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Weight file names diffusers and transformers write, full precision first.
const WEIGHT_FILES: &[&str] = &[
    "diffusion_pytorch_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
    "pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
    "pytorch_model.fp16.bin",
];

/// A network's `config.json` and weights.
#[derive(Debug, Clone)]
pub struct ComponentFiles {
    pub config: PathBuf,
    pub weights: PathBuf,
}

/// Everything a Stable Diffusion pipeline needs, resolved to local paths.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// What the user asked for (a path or a repo id).
    pub name: String,
    /// The folder the files were found in.
    pub root: PathBuf,
    pub unet: ComponentFiles,
    pub text_encoder: ComponentFiles,
    pub vae: ComponentFiles,
    pub scheduler_config: PathBuf,
    /// `tokenizer/` when the model has one (else the bundled CLIP vocabulary is used).
    pub tokenizer_dir: Option<PathBuf>,
}

/// How to find a model.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The HF hub cache ([`hub::cache_dir`] by default).
    pub cache: PathBuf,
    pub revision: String,
    /// Never touch the network (also implied by `HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Prefer `*.fp16.*` weight files (half the download; upcast on load).
    pub prefer_fp16: bool,
}

impl Default for Lookup {
    fn default() -> Self {
        Self {
            cache: hub::cache_dir(),
            revision: "main".into(),
            offline: hub::offline_by_env(),
            prefer_fp16: false,
        }
    }
}

const COMPONENTS: [&str; 3] = ["unet", "text_encoder", "vae"];

impl Lookup {
    fn weight_files(&self) -> Vec<&'static str> {
        let mut files = WEIGHT_FILES.to_vec();
        if self.prefer_fp16 {
            files.sort_by_key(|f| !f.contains(".fp16."));
        }
        files
    }

    /// Resolves `model`: an existing directory is a diffusers folder; anything of the form
    /// `org/name` is a hub repo id.
    pub fn resolve(&self, model: &str) -> Result<ModelFiles> {
        let path = Path::new(model);
        if path.is_dir() {
            return self.in_folder(model, path);
        }
        let cache = &self.cache;
        let mut searched = vec![path.display().to_string()];
        if is_repo_id(model) {
            let repo = hub::repo_dir(cache, model);
            searched.push(format!("{} (revision {})", repo.display(), self.revision));
            if let Some(snapshot) = hub::snapshot_dir(cache, model, &self.revision) {
                if let Ok(files) = self.in_folder(model, &snapshot) {
                    return Ok(files);
                }
            }
            if !self.offline {
                return self.download(model, cache);
            }
        }
        Err(Error::ModelNotFound {
            model: model.into(),
            searched: searched
                .iter()
                .map(|s| format!("  {s}"))
                .collect::<Vec<_>>()
                .join("\n"),
            fetch: if is_repo_id(model) {
                format!(
                    "dream3d info --model {model}   (online, without HF_HUB_OFFLINE; downloads into {})",
                    cache.display()
                )
            } else {
                "dream3d info --model stabilityai/stable-diffusion-2-1-base   (or pass a diffusers folder or a hub repo id to --model)".into()
            },
        })
    }

    fn in_folder(&self, name: &str, root: &Path) -> Result<ModelFiles> {
        let component = |dir: &str| -> Result<ComponentFiles> {
            let folder = root.join(dir);
            let config = folder.join("config.json");
            if !config.is_file() {
                return Err(Error::MissingFile {
                    path: config,
                    what: format!(
                        "{dir} config (is {} a diffusers model folder?)",
                        root.display()
                    ),
                });
            }
            let weights = self
                .weight_files()
                .iter()
                .map(|f| folder.join(f))
                .find(|p| p.is_file())
                .ok_or_else(|| Error::MissingFile {
                    path: folder.clone(),
                    what: format!("{dir} weights (one of {})", WEIGHT_FILES.join(", ")),
                })?;
            Ok(ComponentFiles { config, weights })
        };
        let scheduler_config = root.join("scheduler/scheduler_config.json");
        if !scheduler_config.is_file() {
            return Err(Error::MissingFile {
                path: scheduler_config,
                what: "scheduler config".into(),
            });
        }
        let tokenizer_dir = root.join("tokenizer");
        Ok(ModelFiles {
            name: name.into(),
            root: root.to_path_buf(),
            unet: component("unet")?,
            text_encoder: component("text_encoder")?,
            vae: component("vae")?,
            scheduler_config,
            tokenizer_dir: tokenizer_dir
                .join("vocab.json")
                .is_file()
                .then_some(tokenizer_dir),
        })
    }

    /// Fetches the files a pipeline needs (one weight file per component) into the cache.
    fn download(&self, repo_id: &str, cache: &Path) -> Result<ModelFiles> {
        eprintln!("downloading {repo_id} into {}", cache.display());
        let hub = hub::Downloader::new(cache, repo_id, &self.revision)?;
        let index = hub.get("model_index.json")?;
        for file in [
            "scheduler/scheduler_config.json",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json",
        ] {
            hub.get(file)?;
        }
        for dir in COMPONENTS {
            hub.get(&format!("{dir}/config.json"))?;
            let mut last_err = None;
            let found = self
                .weight_files()
                .iter()
                .any(|f| match hub.get(&format!("{dir}/{f}")) {
                    Ok(_) => true,
                    Err(e) => {
                        last_err = Some(e);
                        false
                    }
                });
            if !found {
                return Err(last_err.expect("at least one weight file was tried"));
            }
        }
        let root = index
            .parent()
            .expect("model_index.json has a parent")
            .to_path_buf();
        self.in_folder(repo_id, &root)
    }
}

fn is_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}
