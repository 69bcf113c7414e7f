//! A run directory (of `fit` or `generate`): its resolved config, metrics, checkpoints and
//! results. Every file that matters is written atomically.

use crate::error::{Error, Result};
use crate::files::write_atomic;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where runs go unless told otherwise (`fit-NAME`, `generate`, `samples`).
pub const RUNS_ROOT: &str = "dream3d-runs";
/// Where `fit` leaves its distribution when given no output, and what `sample` and `generate`
/// use when given none.
pub const LATEST_DISTRIBUTION: &str = "dream3d-runs/latest.dist.safetensors";

/// A run's resolved settings, kept as `config.toml`.
pub trait RunConfig: Serialize + DeserializeOwned {
    /// The command whose runs use this config ("fit", "generate").
    const COMMAND: &'static str;

    fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::BadConfig {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("run configs serialise to TOML")
    }
}

pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// Creates `root` (refusing one that already holds a run: use `--resume` for that).
    pub fn create(root: &Path, config: &impl RunConfig) -> Result<Self> {
        if root.join("config.toml").exists() {
            return Err(Error::Input(format!(
                "{} already holds a run; continue it with --resume {0} or choose another --run-dir",
                root.display()
            )));
        }
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let run = Self {
            root: root.to_path_buf(),
        };
        write_atomic(&run.config_path(), config.to_toml().as_bytes())?;
        Ok(run)
    }

    /// Opens an existing run and its resolved config.
    pub fn open<C: RunConfig>(root: &Path) -> Result<(Self, C)> {
        let run = Self {
            root: root.to_path_buf(),
        };
        if !run.config_path().is_file() {
            return Err(Error::Input(format!(
                "{} is not a {} run directory (no config.toml)",
                root.display(),
                C::COMMAND
            )));
        }
        let config = C::from_toml_file(&run.config_path())?;
        Ok((run, config))
    }

    /// Rewrites the resolved config (a resumed run whose options were changed on the command
    /// line, so that the next resume sees them).
    pub fn save_config(&self, config: &impl RunConfig) -> Result<()> {
        write_atomic(&self.config_path(), config.to_toml().as_bytes())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.root.join("checkpoint.safetensors")
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// Drops metric lines of steps ≥ `from` (a resumed run writes them again).
    pub fn truncate_metrics(&self, from: usize) -> Result<()> {
        let path = self.metrics_path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| (s as usize) < from)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        write_atomic(&path, kept.as_bytes())
    }

    pub fn append_metrics(&self, line: &serde_json::Value) -> Result<()> {
        crate::files::append_line(&self.metrics_path(), &line.to_string())
    }
}
