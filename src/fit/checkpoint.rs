//! The resumable state of a fit: soft prompts, AdamW moments and the next step.

use crate::error::{Error, Result};
use crate::optim::AdamW;
use crate::weights::{save_atomic, TensorFile};
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
        save_atomic(path, &tensors, info)
    }

    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let mut file = TensorFile::read(path, device)?;
        let number = |file: &TensorFile, key: &str| -> Result<u64> {
            file.meta(key)?.parse().map_err(|_| Error::CorruptWeights {
                path: path.to_path_buf(),
                reason: format!("`{key}` is not a number"),
            })
        };
        Ok(Self {
            next_step: number(&file, "next_step")? as usize,
            adam_step: number(&file, "adam_step")?,
            soft_prompts: file.take("soft_prompts", None)?,
            adam_m: file.take("adam_m", None)?,
            adam_v: file.take("adam_v", None)?,
        })
    }
}
