//! The resumable state of a fit: soft prompts, AdamW moments and the next step.

use crate::error::{Error, Result};
use crate::optim::AdamW;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

pub struct Checkpoint {
    /// The first step still to run.
    pub next_step: usize,
    pub soft_prompts: Tensor,
    pub adam_step: u64,
    pub adam_m: Tensor,
    pub adam_v: Tensor,
}

impl Checkpoint {
    pub fn capture(next_step: usize, soft_prompts: &Tensor, opt: &AdamW) -> Self {
        Self {
            next_step,
            soft_prompts: soft_prompts.detach(),
            adam_step: opt.step,
            adam_m: opt.m.clone(),
            adam_v: opt.v.clone(),
        }
    }

    /// Writes atomically: an interrupted write never replaces the previous checkpoint.
    pub fn save(&self, path: &Path) -> Result<()> {
        let info = HashMap::from([
            ("next_step".to_string(), self.next_step.to_string()),
            ("adam_step".to_string(), self.adam_step.to_string()),
        ]);
        let tensors = [
            ("soft_prompts", &self.soft_prompts),
            ("adam_m", &self.adam_m),
            ("adam_v", &self.adam_v),
        ];
        let tmp = path.with_extension("tmp");
        safetensors::serialize_to_file(tensors, Some(info), &tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let corrupt = |reason: String| Error::CorruptWeights {
            path: path.to_path_buf(),
            reason,
        };
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let number = |key: &str| -> Result<u64> {
            header
                .metadata()
                .as_ref()
                .and_then(|m| m.get(key))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| corrupt(format!("no `{key}` in the checkpoint metadata")))
        };
        let mut t = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| corrupt(e.to_string()))?;
        let mut take = |name: &str| {
            t.remove(name).ok_or_else(|| Error::MissingTensor {
                path: path.to_path_buf(),
                name: name.into(),
            })
        };
        Ok(Self {
            next_step: number("next_step")? as usize,
            adam_step: number("adam_step")?,
            soft_prompts: take("soft_prompts")?,
            adam_m: take("adam_m")?,
            adam_v: take("adam_v")?,
        })
    }
}
