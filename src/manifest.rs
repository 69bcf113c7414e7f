//! What each shard of a sharded `sample` or `generate` made: one JSON line per item in the
//! output folder's `manifest[.shard-I-of-N].jsonl`, appended as items finish; and `collect`,
//! which merges every shard's lines, checks every output again and says how to redo what is
//! missing or broken.

use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::shard::Shard;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemStatus {
    /// Made by this process.
    Done,
    /// Found made and valid by an earlier run, and left alone.
    Skipped,
    /// Stopped with an error (in `error`).
    Failed,
}

/// One item of a sharded command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    pub item: usize,
    /// Items of the whole command.
    pub of: usize,
    pub seed: u64,
    pub conditioning: String,
    /// Its files, relative to the folder.
    pub outputs: Vec<String>,
    pub status: ItemStatus,
    pub seconds: f64,
    /// The shard that made it, `I/N`.
    pub shard: String,
    /// The command every shard runs, without its shard: `collect` adds `--shard I/N`.
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The manifest file of `shard` in `dir`.
pub fn manifest_path(dir: &Path, shard: Shard) -> PathBuf {
    dir.join(shard.file_name("manifest.jsonl"))
}

/// Appends `record` to `shard`'s manifest in `dir` (one whole line).
pub fn append(dir: &Path, shard: Shard, record: &ItemRecord) -> Result<()> {
    let line = serde_json::to_string(record).expect("records serialise");
    crate::files::append_line(&manifest_path(dir, shard), &line)
}

/// Every manifest line in `dir`, the last one per item winning (a requeued shard appends
/// again). A line cut short by a killed process is ignored.
pub fn read_all(dir: &Path) -> Result<BTreeMap<usize, ItemRecord>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("manifest") && n.ends_with(".jsonl"))
        })
        .collect();
    paths.sort();
    let mut items = BTreeMap::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        for record in text
            .lines()
            .filter_map(|l| serde_json::from_str::<ItemRecord>(l).ok())
        {
            items.insert(record.item, record);
        }
    }
    Ok(items)
}

/// Whether a file is a usable output: a PNG that decodes, a glTF asset our reader reads.
pub fn check_output(path: &Path) -> std::result::Result<(), String> {
    if !path.is_file() {
        return Err("missing".into());
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("png") => image::open(path)
            .map(|_| ())
            .map_err(|e| format!("does not decode: {e}")),
        Some("glb") | Some("gltf") => crate::mesh::load::read_asset(path)
            .map(|_| ())
            .map_err(|e| format!("does not read back: {e}")),
        _ => Ok(()),
    }
}

/// Whether every output of an item is usable (the item can be skipped).
pub fn outputs_valid(dir: &Path, outputs: &[String]) -> bool {
    !outputs.is_empty() && outputs.iter().all(|o| check_output(&dir.join(o)).is_ok())
}

/// What `collect` found.
#[derive(Debug, Clone, Serialize)]
pub struct Collected {
    pub total: usize,
    pub valid: Vec<usize>,
    /// Items with no record, a failed record, or an output that is missing or broken; each
    /// with why and the command that redoes it.
    pub missing: Vec<Missing>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    pub item: usize,
    pub reason: String,
    pub command: String,
}

/// Merges the manifests in `dir` and re-validates every output. The item count and the
/// command come from the records; the shard count to redo an item with is the one it was
/// assigned to (any record's N).
pub fn collect(dir: &Path) -> Result<Collected> {
    let records = read_all(dir)?;
    let Some(any) = records.values().next() else {
        return Err(Error::Input(format!(
            "{}: no manifest*.jsonl here; collect reads the folder a sharded `sample -o DIR` or `generate --run-dir DIR` wrote",
            dir.display()
        )));
    };
    let total = any.of;
    let shards: u32 = any
        .shard
        .split_once('/')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(1);
    let redo = |item: usize| {
        let shard = Shard {
            index: (item % shards as usize) as u32,
            count: shards,
        };
        format!("{} --shard {shard}", any.command)
    };
    let mut valid = vec![];
    let mut missing = vec![];
    for item in 0..total {
        let reason = match records.get(&item) {
            None => Some("no record: its shard has not run it".to_string()),
            Some(r) if r.status == ItemStatus::Failed => Some(format!(
                "failed: {}",
                r.error.as_deref().unwrap_or("(no message)")
            )),
            Some(r) => r
                .outputs
                .iter()
                .find_map(|o| check_output(&dir.join(o)).err().map(|e| format!("{o} {e}"))),
        };
        match reason {
            None => valid.push(item),
            Some(reason) => missing.push(Missing {
                item,
                reason,
                command: redo(item),
            }),
        }
    }
    Ok(Collected {
        total,
        valid,
        missing,
    })
}

impl Collected {
    /// Writes the merged summary as `collected.json` in `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("summaries serialise");
        write_atomic(&dir.join("collected.json"), text.as_bytes())
    }
}
