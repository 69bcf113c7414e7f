//! The Hugging Face hub cache: where snapshots live, and downloading into it.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The cache directory huggingface_hub would use: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("HF_HUB_CACHE") {
        return dir;
    }
    if let Some(home) = var("HF_HOME") {
        return home.join("hub");
    }
    var("HOME")
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/huggingface/hub")
}

/// True when `HF_HUB_OFFLINE` is set to anything but 0/false.
pub fn offline_by_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false" | "False"))
}

/// `<cache>/models--org--name`.
pub fn repo_dir(cache: &Path, repo_id: &str) -> PathBuf {
    cache.join(format!("models--{}", repo_id.replace('/', "--")))
}

/// The snapshot folder of `revision` (a branch/tag name resolved through `refs/`, or a commit
/// hash), if the cache has one.
pub fn snapshot_dir(cache: &Path, repo_id: &str, revision: &str) -> Option<PathBuf> {
    let repo = repo_dir(cache, repo_id);
    let commit = std::fs::read_to_string(repo.join("refs").join(revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let dir = repo.join("snapshots").join(commit);
    dir.is_dir().then_some(dir)
}

/// Downloads files of a model repo into `cache` with a progress bar; returns the local paths of
/// the ones that exist upstream (`Ok(None)` for a file the repo does not have).
pub struct Downloader {
    repo: hf_hub::api::sync::ApiRepo,
    repo_id: String,
}

impl Downloader {
    pub fn new(cache: &Path, repo_id: &str, revision: &str) -> Result<Self> {
        let api =
            hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(cache.to_path_buf()))
                .with_progress(true)
                .build()
                .map_err(|e| Error::Download {
                    repo: repo_id.into(),
                    file: String::new(),
                    reason: e.to_string(),
                })?;
        let repo = api.repo(hf_hub::Repo::with_revision(
            repo_id.to_string(),
            hf_hub::RepoType::Model,
            revision.to_string(),
        ));
        Ok(Self {
            repo,
            repo_id: repo_id.into(),
        })
    }

    pub fn get(&self, file: &str) -> Result<PathBuf> {
        self.repo.get(file).map_err(|e| Error::Download {
            repo: self.repo_id.clone(),
            file: file.into(),
            reason: e.to_string(),
        })
    }
}
