//! `samples.json`: every setting and seed behind a folder of samples, with the command that
//! regenerates each image bit-exactly on its own.

use dream3d::sample::SampleSettings;
use dream3d::shard::Shard;
use std::path::Path;

pub const FILE: &str = "samples.json";

#[derive(serde::Serialize)]
pub struct Sidecar {
    pub dream3d_version: String,
    pub model: String,
    pub distributions: Vec<MixRecord>,
    pub prompt: Option<String>,
    pub edit: Option<String>,
    /// The conditioning as a person reads it (`*` marks the learned tokens).
    pub conditioning: String,
    pub negative: String,
    #[serde(flatten)]
    pub settings: SampleSettings,
    /// Views per object (1 for Stable Diffusion; MVDream's 4).
    pub views: usize,
    /// Image i uses seed + i.
    pub seed: u64,
    pub init_noise: Option<String>,
    /// Regenerates the whole folder.
    pub command: String,
    pub images: Vec<ImageRecord>,
}

#[derive(Clone, serde::Serialize)]
pub struct MixRecord {
    pub path: String,
    pub weight: f64,
    pub gamma: f64,
}

#[derive(serde::Serialize)]
pub struct ImageRecord {
    /// The object's files: one PNG, or each view and the views' strip.
    pub files: Vec<String>,
    pub seed: u64,
    /// Row of the `--init-noise` tensor this image started from.
    pub init_noise_row: Option<usize>,
    /// Regenerates this image alone (absent when it started from one row of a multi-row
    /// `--init-noise` tensor, which only the whole-folder command reproduces).
    pub command: Option<String>,
}

impl Sidecar {
    /// Writes `samples.json`, or a shard's `samples.shard-I-of-N.json`.
    pub fn write(&self, dir: &Path, shard: Shard) -> dream3d::Result<()> {
        let json = serde_json::to_string_pretty(self).expect("sidecar serialises");
        dream3d::files::write_atomic(&dir.join(shard.file_name(FILE)), json.as_bytes())
    }
}

/// `arg` as an absolute path when it names something on disk (hub ids stay as they are), so
/// that the recorded commands work from any folder.
pub fn absolute_if_local(arg: &str) -> String {
    let path = Path::new(arg);
    match path.exists().then(|| std::path::absolute(path)) {
        Some(Ok(absolute)) => absolute.display().to_string(),
        _ => arg.to_string(),
    }
}
