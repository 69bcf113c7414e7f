//! A `generate` run: its settings, the conditioning it was sampled with (kept so a resumed
//! run needs neither the distribution nor the text encoder), and the loop that steps the
//! distiller with checkpoints, validation views, metrics, Ctrl-C and non-finite losses.

use super::guidance::{Guidance, GuidanceSettings};
use super::latents::LatentEncoder;
use super::refine::{RefineReport, RefineSettings};
use super::step::{DistillSettings, Distiller, StepReport};
use crate::error::{Error, Result};
use crate::gpu::GpuField;
use crate::imaging::{contact_sheet, save_png};
use crate::run_dir::{RunConfig, RunDir};
use crate::turntable::Turntable;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// The field checkpoint in a run directory (what `export` and `render` read).
pub const FIELD_FILE: &str = "field.safetensors";
/// The prompt and negative-prompt embeddings the run is conditioned on.
pub const CONDITIONING_FILE: &str = "conditioning.safetensors";
/// Folder of validation grids.
pub const VALIDATION_DIR: &str = "validation";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateConfig {
    /// What the asset is conditioned on, in words (for people; the embeddings are in
    /// conditioning.safetensors).
    pub conditioning: String,
    /// The MVDream checkpoint.
    pub model: String,
    pub guidance: GuidanceSettings,
    pub distill: DistillSettings,
    /// The mesh stage after the field.
    pub refine: RefineSettings,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// Steps between validation grids (4 views at the evaluation camera).
    pub validate_every: u64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            conditioning: String::new(),
            model: String::new(),
            guidance: GuidanceSettings::default(),
            distill: DistillSettings::default(),
            refine: RefineSettings::default(),
            checkpoint_every: 500,
            validate_every: 1000,
        }
    }
}

impl RunConfig for GenerateConfig {
    const COMMAND: &'static str = "generate";
}

impl GenerateConfig {
    pub fn validate(&self) -> Result<()> {
        if self.checkpoint_every == 0 || self.validate_every == 0 {
            return Err(Error::Input(
                "checkpoint_every and validate_every must be at least 1".into(),
            ));
        }
        if !(self.guidance.scale.is_finite() && (0.0..=1.0).contains(&self.guidance.rescale)) {
            return Err(Error::Input(
                "guidance: scale must be finite and rescale within [0, 1]".into(),
            ));
        }
        self.distill.validate()?;
        self.refine.validate()
    }

    /// Steps of the whole run: the field's, then the mesh stage's.
    pub fn total_steps(&self) -> u64 {
        self.distill.steps + self.refine.geometry_steps + self.refine.texture_steps
    }
}

/// The prompt embedding (1 × 77 × D) and the negative prompt's.
pub struct Conditioning {
    pub cond: Tensor,
    pub uncond: Tensor,
}

impl Conditioning {
    pub fn save(&self, run: &RunDir) -> Result<()> {
        self.save_file(&run.path(CONDITIONING_FILE))
    }

    pub fn load(run: &RunDir, device: &Device) -> Result<Self> {
        Self::load_file(&run.path(CONDITIONING_FILE), device)
    }

    pub fn save_file(&self, path: &Path) -> Result<()> {
        let tensors = HashMap::from([
            ("cond".to_string(), self.cond.to_device(&Device::Cpu)?),
            ("uncond".to_string(), self.uncond.to_device(&Device::Cpu)?),
        ]);
        crate::files::write_atomic_with(path, |tmp| {
            candle_core::safetensors::save(&tensors, tmp).map_err(std::io::Error::other)
        })
    }

    pub fn load_file(path: &Path, device: &Device) -> Result<Self> {
        let mut tensors =
            candle_core::safetensors::load(path, device).map_err(|e| Error::io(path, e))?;
        let mut take = |name: &str| {
            tensors.remove(name).ok_or_else(|| Error::MissingTensor {
                path: path.to_path_buf(),
                name: name.into(),
            })
        };
        Ok(Self {
            cond: take("cond")?,
            uncond: take("uncond")?,
        })
    }
}

pub enum GenerateEvent<'a> {
    Step(&'a StepReport),
    /// A step of the mesh stage.
    Refine(&'a RefineReport),
    Checkpoint {
        next_step: u64,
    },
    Validation {
        step: u64,
        path: std::path::PathBuf,
    },
}

pub enum Outcome {
    Finished,
    Interrupted { next_step: u64 },
}

/// Saves the field as the run's checkpoint (atomically).
pub fn checkpoint(field: &GpuField, run: &RunDir) -> Result<()> {
    field.save(&run.path(FIELD_FILE))
}

/// 4 views at threestudio's evaluation camera (elevation 15°, distance 3, 40°), side by side.
pub fn validation_grid(field: &mut GpuField, size: u32) -> Result<image::RgbImage> {
    let turntable = Turntable {
        frames: 4,
        size,
        ..Turntable::default()
    };
    let views = (0..4)
        .map(|i| turntable.field_view(field, &turntable.camera(i)))
        .collect::<Result<Vec<_>>>()?;
    Ok(contact_sheet(&views, 4))
}

/// Steps the distiller from its field's step to `config.distill.steps`.
pub fn run(
    config: &GenerateConfig,
    distiller: &mut Distiller,
    guidance: &dyn Guidance,
    encoder: &LatentEncoder,
    run: &RunDir,
    stop: &AtomicBool,
    mut on_event: impl FnMut(GenerateEvent),
) -> Result<Outcome> {
    let start = distiller.field.step;
    if start >= config.distill.steps {
        // Done: the metrics log may go on with the mesh stage's steps.
        return Ok(Outcome::Finished);
    }
    run.truncate_metrics(start as usize)?;
    if !run.path(FIELD_FILE).exists() {
        // A last good field from the start: what a crash or a diverging step falls back to.
        checkpoint(&distiller.field, run)?;
    }
    for step in start..config.distill.steps {
        if stop.load(Ordering::SeqCst) {
            checkpoint(&distiller.field, run)?;
            on_event(GenerateEvent::Checkpoint { next_step: step });
            return Ok(Outcome::Interrupted { next_step: step });
        }
        let report = match distiller.step(step, guidance, encoder) {
            Ok(report) => report,
            Err(e @ Error::NonFinite { .. }) => {
                // The field is as the previous step left it: keep that.
                checkpoint(&distiller.field, run)?;
                return Err(e);
            }
            // A non-finite field (`Error::NonFiniteField`) is not saved: the last checkpoint
            // stays the run's field.
            Err(e) => return Err(e),
        };
        run.append_metrics(&serde_json::to_value(&report).expect("reports serialise"))?;
        on_event(GenerateEvent::Step(&report));
        let done = step + 1;
        if done % config.validate_every == 0 || done == config.distill.steps {
            let grid = validation_grid(&mut distiller.field, report.size.max(64))?;
            let path = run.path(VALIDATION_DIR).join(format!("step-{done:05}.png"));
            std::fs::create_dir_all(run.path(VALIDATION_DIR))
                .map_err(|e| Error::io(run.path(VALIDATION_DIR), e))?;
            save_png(&path, &grid)?;
            on_event(GenerateEvent::Validation { step: done, path });
        }
        if done % config.checkpoint_every == 0 || done == config.distill.steps {
            checkpoint(&distiller.field, run)?;
            on_event(GenerateEvent::Checkpoint { next_step: done });
        }
    }
    Ok(Outcome::Finished)
}
