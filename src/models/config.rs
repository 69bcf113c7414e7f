//! Reading component `config.json` files with errors that name the file and the field.

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use std::path::Path;

/// Parses a JSON config file into `T`; unknown fields are ignored, wrong types are errors.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingFile {
            path: path.to_path_buf(),
            what: "config file".into(),
        },
        _ => Error::io(path, e),
    })?;
    serde_json::from_str(&text).map_err(|e| Error::BadConfig {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The error for a config value this implementation does not cover.
pub fn unsupported(
    path: &Path,
    field: &str,
    value: impl std::fmt::Debug,
    supported: &str,
) -> Error {
    Error::UnsupportedConfig {
        path: path.to_path_buf(),
        field: field.into(),
        value: format!("{value:?}"),
        supported: supported.into(),
    }
}

/// diffusers fields that are either one value for every block or one per block.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value for each of `n` blocks; `None` when a list has the wrong length.
    pub fn expand(&self, n: usize) -> Option<Vec<T>> {
        match self {
            Self::One(v) => Some(vec![v.clone(); n]),
            Self::Each(v) if v.len() == n => Some(v.clone()),
            Self::Each(_) => None,
        }
    }
}
