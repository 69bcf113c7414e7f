//! Our own safetensors files (distributions, checkpoints): named tensors plus string metadata,
//! written atomically and read back with errors that name the file.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Writes a temporary file beside `path`, then renames it over `path`: an interrupted write
/// never leaves a half file in its place.
pub fn save_atomic(
    path: &Path,
    tensors: &[(&str, &Tensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    crate::files::write_atomic_with(path, |tmp| {
        safetensors::serialize_to_file(tensors.iter().copied(), Some(metadata), tmp)
            .map_err(std::io::Error::other)
    })
}

/// A file's tensors and metadata.
pub struct TensorFile<'a> {
    path: &'a Path,
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

impl<'a> TensorFile<'a> {
    pub fn read(path: &'a Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let corrupt = |reason: String| Error::CorruptWeights {
            path: path.to_path_buf(),
            reason,
        };
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(Self {
            path,
            tensors,
            metadata,
        })
    }

    /// Removes and returns tensor `name`, checking its shape when `shape` is given.
    pub fn take(&mut self, name: &str, shape: Option<&[usize]>) -> Result<Tensor> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| Error::MissingTensor {
                path: self.path.to_path_buf(),
                name: name.into(),
            })?;
        match shape {
            Some(shape) if t.dims() != shape => Err(Error::ShapeMismatch {
                path: self.path.to_path_buf(),
                name: name.into(),
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            }),
            _ => Ok(t),
        }
    }

    /// Metadata entry `key`, or an error naming the file.
    pub fn meta(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::CorruptWeights {
                path: self.path.to_path_buf(),
                reason: format!("no `{key}` in its metadata"),
            })
    }
}
