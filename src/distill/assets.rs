//! The assets of one `generate` command, made one after the other. Several assets share a
//! parent directory whose plan (each asset's seed, run directory and output, and the
//! conditioning sampled for it) is written before the first one starts; an asset's run
//! directory and field are made when it starts, so only one field is on the GPU and an
//! interruption leaves nothing half-made: resuming the parent finishes the interrupted asset,
//! keeps the finished ones and starts the rest.

use super::guidance::MultiViewGuidance;
use super::latents::LatentEncoder;
use super::refine::{self, RefineOutcome, Refined, Refiner, SURFACE_FILE, TEXTURE_FILE};
use super::run::{self, Conditioning, GenerateConfig, GenerateEvent, Outcome, FIELD_FILE};
use super::step::Distiller;
use crate::camera::Camera;
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::gpu::surface::SurfaceRenderer;
use crate::gpu::{GpuContext, GpuField};
use crate::manifest::{self, ItemRecord, ItemStatus};
use crate::mesh::export::{export_glb, export_mesh_glb, ExportSettings};
use crate::mvdream::MvdreamModel;
use crate::run_dir::RunDir;
use crate::shard::Shard;
use crate::turntable::Turntable;
use candle_core::Device;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The plan in a parent directory of several assets (unsharded).
pub const PLAN_FILE: &str = "plan.toml";
/// The conditioning of every asset of a plan (`cond` has one row per asset).
const PLAN_CONDITIONING_FILE: &str = "conditioning.safetensors";

/// What is done with a finished field.
#[derive(Debug, Clone)]
pub struct Finish {
    pub export: ExportSettings,
    /// Turntable frames (0: none).
    pub frames: u32,
}

/// One asset's run: its directory, settings, field, conditioning and output.
pub struct Asset {
    pub run: RunDir,
    pub config: GenerateConfig,
    pub field: GpuField,
    pub conditioning: Conditioning,
    pub output: PathBuf,
}

impl Asset {
    /// A new run in `root` with a freshly initialised field (seeded by `config.distill.seed`).
    /// A directory a crash left with its settings but no field yet is started again.
    pub fn create(
        ctx: &Arc<GpuContext>,
        root: &Path,
        config: GenerateConfig,
        conditioning: Conditioning,
        output: PathBuf,
    ) -> Result<Self> {
        let run = if root.join("config.toml").exists() && !root.join(FIELD_FILE).exists() {
            let run = RunDir { root: root.into() };
            run.save_config(&config)?;
            run
        } else {
            RunDir::create(root, &config)?
        };
        conditioning.save(&run)?;
        let f = &config.distill.field;
        let field = GpuField::new(ctx.clone(), f.clone(), &f.init_params(config.distill.seed))?;
        Ok(Self {
            run,
            config,
            field,
            conditioning,
            output,
        })
    }

    /// The run in `root` from its last checkpoint; `adjust` may change its step counts (its
    /// settings are then validated and saved). The field's steps cannot change once the mesh
    /// stage has begun.
    pub fn resume(
        ctx: &Arc<GpuContext>,
        root: &Path,
        adjust: impl FnOnce(&mut GenerateConfig),
        device: &Device,
        output: PathBuf,
    ) -> Result<Self> {
        let (run, mut config) = RunDir::open::<GenerateConfig>(root)?;
        let before = config.clone();
        adjust(&mut config);
        if config != before {
            if config.distill.steps != before.distill.steps && run.path(SURFACE_FILE).is_file() {
                return Err(Error::Input(format!(
                    "{}: the mesh stage has begun after {} field steps, which can no longer change; resume without --steps",
                    root.display(),
                    before.distill.steps
                )));
            }
            if config.refine.geometry_steps != before.refine.geometry_steps
                && run.path(TEXTURE_FILE).is_file()
            {
                return Err(Error::Input(format!(
                    "{}: the texture phase has begun after {} geometry steps, which can no longer change; resume without --refine-steps, or set [refine] texture_steps in its config.toml",
                    root.display(),
                    before.refine.geometry_steps
                )));
            }
            config.validate()?;
            run.save_config(&config)?;
        }
        let field = GpuField::load(ctx.clone(), &run.path(FIELD_FILE))?;
        let conditioning = Conditioning::load(&run, device)?;
        Ok(Self {
            run,
            config,
            field,
            conditioning,
            output,
        })
    }

    /// Distils MVDream into the field up to the configured steps, refines the mesh stage's
    /// surface and texture when configured, then exports the asset (and a turntable) and records
    /// it finished, unless stopped first.
    pub fn generate(
        self,
        mv: &MvdreamModel,
        finish: &Finish,
        stop: &AtomicBool,
        on_event: &mut dyn FnMut(AssetEvent),
    ) -> Result<Outcome> {
        let guidance = MultiViewGuidance {
            unet: &mv.unet,
            schedule: &mv.schedule,
            cond: self.conditioning.cond,
            uncond: self.conditioning.uncond,
            views: self.config.distill.views,
            settings: self.config.guidance,
        };
        let encoder = LatentEncoder {
            vae: &mv.vae,
            size: self.config.distill.image_size,
        };
        let mut distiller = Distiller {
            field: self.field,
            settings: self.config.distill.clone(),
        };
        on_event(AssetEvent::Distilling {
            run: &self.run.root,
            from_step: distiller.field.step,
            steps: self.config.total_steps(),
        });
        let outcome = run::run(
            &self.config,
            &mut distiller,
            &guidance,
            &encoder,
            &self.run,
            stop,
            |e| on_event(AssetEvent::Run(e)),
        )?;
        if let Outcome::Interrupted { .. } = outcome {
            return Ok(outcome);
        }
        if !self.config.refine.enabled() {
            finish_asset(
                &mut distiller.field,
                &self.config,
                &self.run,
                finish,
                &self.output,
                on_event,
            )?;
        } else {
            let mut refiner = Refiner {
                config: &self.config,
                guidance: &guidance,
                encoder: &encoder,
                renderer: SurfaceRenderer::new(distiller.field.ctx.clone())?,
            };
            // The field moves into the mesh stage, whose texture phase goes on fitting it.
            let outcome = refine::run(&mut refiner, distiller.field, &self.run, stop, |e| {
                on_event(AssetEvent::Run(e))
            })?;
            let refined = match outcome {
                RefineOutcome::Interrupted { next_step } => {
                    return Ok(Outcome::Interrupted { next_step })
                }
                RefineOutcome::Finished(refined) => refined,
            };
            finish_refined(
                &mut refiner,
                &refined,
                &self.run,
                finish,
                &self.output,
                on_event,
            )?;
        }
        Finished {
            output: self.output.clone(),
            steps: self.config.total_steps(),
        }
        .save(&self.run)?;
        Ok(Outcome::Finished)
    }
}

/// What a finished asset's run directory records (`finished.json`): its output and the steps it
/// was made with. A plan skips an asset only when this matches and the output reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub output: PathBuf,
    pub steps: u64,
}

impl Finished {
    const FILE: &'static str = "finished.json";

    fn save(&self, run: &RunDir) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("records serialise");
        write_atomic(&run.path(Self::FILE), text.as_bytes())
    }

    /// The record in run directory `dir`, if it finished.
    pub fn load(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join(Self::FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

pub enum AssetEvent<'a> {
    /// An asset of a plan begins (or is found finished and `skipped`).
    Asset {
        index: usize,
        of: usize,
        seed: u64,
        skipped: bool,
    },
    /// Distillation starts at `from_step` of `steps`.
    Distilling {
        run: &'a Path,
        from_step: u64,
        steps: u64,
    },
    Run(GenerateEvent<'a>),
    Exported {
        path: &'a Path,
        triangles: usize,
    },
    Turntable {
        path: &'a Path,
    },
}

/// The mesh and turntable of a finished field.
fn finish_asset(
    field: &mut GpuField,
    config: &GenerateConfig,
    run: &RunDir,
    finish: &Finish,
    output: &Path,
    on_event: &mut dyn FnMut(AssetEvent),
) -> Result<()> {
    let metadata = serde_json::json!({
        "source": run.root.display().to_string(),
        "step": field.step,
        "conditioning": config.conditioning,
    });
    let mesh = export_glb(field, &finish.export, output, metadata).map_err(|e| {
        Error::Input(format!(
            "exporting {}: {e} (the field is kept: try dream3d export {} --threshold …)",
            output.display(),
            run.root.display()
        ))
    })?;
    on_event(AssetEvent::Exported {
        path: output,
        triangles: mesh.triangles.len(),
    });
    write_turntable(run, finish, on_event, |turntable, camera| {
        turntable.field_view(field, camera)
    })
}

/// `turntable.gif` in the run directory, each frame from `view` (none with 0 frames).
fn write_turntable(
    run: &RunDir,
    finish: &Finish,
    on_event: &mut dyn FnMut(AssetEvent),
    mut view: impl FnMut(&Turntable, &Camera) -> Result<RgbImage>,
) -> Result<()> {
    if finish.frames == 0 {
        return Ok(());
    }
    let turntable = Turntable {
        frames: finish.frames,
        ..Turntable::default()
    };
    let frames = turntable.render(|camera| view(&turntable, camera), |_| {})?;
    let gif = run.path("turntable.gif");
    turntable.write_gif(&gif, &frames)?;
    on_event(AssetEvent::Turntable { path: &gif });
    Ok(())
}

/// The mesh stage's surface, welded and cleaned as the field's export is, with the texture
/// field's albedo; and its turntable.
fn finish_refined(
    refiner: &mut Refiner,
    refined: &Refined,
    run: &RunDir,
    finish: &Finish,
    output: &Path,
    on_event: &mut dyn FnMut(AssetEvent),
) -> Result<()> {
    let config = refiner.config;
    let mesh = refined.surface.export_mesh(finish.export.min_component);
    let metadata = serde_json::json!({
        "source": run.root.display().to_string(),
        "step": config.total_steps(),
        "conditioning": config.conditioning,
        "surface": {
            "method": "dmtet",
            "resolution": refined.state.grid.resolution,
            "geometry_steps": refined.state.step,
            "texture_steps": refined.texture.step,
            "min_component": finish.export.min_component,
        },
    });
    let mesh = export_mesh_glb(
        &refined.texture,
        mesh,
        finish.export.albedo,
        output,
        metadata,
    )
    .map_err(|e| {
        Error::Input(format!(
            "exporting {}: {e} (the checkpoints are kept in {})",
            output.display(),
            run.root.display()
        ))
    })?;
    on_event(AssetEvent::Exported {
        path: output,
        triangles: mesh.triangles.len(),
    });
    let background = config.refine.background;
    write_turntable(run, finish, on_event, |turntable, camera| {
        refiner.surface_view(
            &refined.surface,
            Some(&refined.texture),
            camera,
            turntable.size,
            background,
        )
    })
}

/// Several assets' plan, as kept in the parent directory's `plan.toml` (a shard's:
/// `plan.shard-I-of-N.toml`, with its conditioning beside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The settings every asset shares; each asset's `distill.seed` is its own.
    pub config: GenerateConfig,
    /// Assets of the whole command; a shard's plan holds its share of them (0 in plans
    /// written before shards: then every asset, numbered by position).
    #[serde(default)]
    pub items: usize,
    /// This plan's shard, `I/N` (`0/1`: every asset).
    #[serde(default = "whole_shard")]
    pub shard: String,
    /// What every shard runs, recorded in the manifest for `dream3d collect`'s redo commands.
    #[serde(default)]
    pub command: String,
    pub assets: Vec<PlannedAsset>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedAsset {
    /// Its index among all the command's assets (its seed and names follow from it).
    #[serde(default)]
    pub item: usize,
    pub seed: u64,
    /// The asset's run directory, inside the parent.
    pub run_dir: String,
    /// The .glb it is exported to.
    pub output: PathBuf,
}

/// How a plan's run ended.
pub enum PlanOutcome {
    Finished,
    /// Stopped in asset `index`, whose run continues at `next_step`.
    Interrupted {
        index: usize,
        next_step: u64,
    },
}

fn whole_shard() -> String {
    Shard::WHOLE.to_string()
}

impl Plan {
    /// Writes the plan and every asset's conditioning (`conditioning.cond`: one row per asset)
    /// into parent directory `root`, which other shards' plans may share.
    pub fn create(root: &Path, plan: Plan, conditioning: &Conditioning) -> Result<Self> {
        let shard = plan.shard()?;
        if Self::exists(root, shard) || root.join("config.toml").exists() {
            return Err(Error::Input(format!(
                "{} already holds a run; continue it with --resume {0} or choose another --run-dir",
                root.display()
            )));
        }
        let rows = conditioning.cond.dim(0)?;
        if rows != plan.assets.len() {
            return Err(Error::Input(format!(
                "a plan of {} assets needs as many conditionings, got {rows}",
                plan.assets.len()
            )));
        }
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        conditioning.save_file(&root.join(shard.file_name(PLAN_CONDITIONING_FILE)))?;
        plan.save(root)?;
        Ok(plan)
    }

    /// `shard`'s plan in parent directory `root`.
    pub fn open(root: &Path, shard: Shard) -> Result<Self> {
        let path = root.join(shard.file_name(PLAN_FILE));
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut plan: Self = toml::from_str(&text).map_err(|e| Error::BadConfig {
            path,
            reason: e.to_string(),
        })?;
        if plan.items == 0 {
            // Written before shards: every asset, numbered by position.
            plan.items = plan.assets.len();
            for (i, asset) in plan.assets.iter_mut().enumerate() {
                asset.item = i;
            }
        }
        Ok(plan)
    }

    /// Whether `root` holds `shard`'s plan.
    pub fn exists(root: &Path, shard: Shard) -> bool {
        root.join(shard.file_name(PLAN_FILE)).is_file()
    }

    pub fn shard(&self) -> Result<Shard> {
        Shard::parse(&self.shard)
    }

    fn save(&self, root: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).expect("plans serialise to TOML");
        write_atomic(
            &root.join(self.shard()?.file_name(PLAN_FILE)),
            text.as_bytes(),
        )
    }

    /// Changes every asset's step counts, started or not: the field's, and each phase of the
    /// mesh stage's.
    pub fn set_steps(
        &mut self,
        root: &Path,
        steps: Option<u64>,
        refine: Option<u64>,
    ) -> Result<()> {
        if let Some(steps) = steps {
            self.config.distill.steps = steps;
        }
        if let Some(refine) = refine {
            self.config.refine.geometry_steps = refine;
            self.config.refine.texture_steps = refine;
        }
        self.config.validate()?;
        self.save(root)
    }

    /// Makes every asset of the plan in `root` in turn: one whose output is there and reads
    /// back is skipped, one with a checkpoint continues from it, the others start. Each is
    /// recorded in the shard's manifest in `root`; one that fails is recorded so and the next
    /// one starts (the error comes at the end).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        root: &Path,
        ctx: &Arc<GpuContext>,
        mv: &MvdreamModel,
        finish: &Finish,
        stop: &AtomicBool,
        device: &Device,
        on_event: &mut dyn FnMut(AssetEvent),
    ) -> Result<PlanOutcome> {
        let shard = self.shard()?;
        let all =
            Conditioning::load_file(&root.join(shard.file_name(PLAN_CONDITIONING_FILE)), device)?;
        let record = |planned: &PlannedAsset, status, seconds, error: Option<String>| {
            let record = ItemRecord {
                item: planned.item,
                of: self.items,
                seed: planned.seed,
                conditioning: self.config.conditioning.clone(),
                outputs: vec![planned.output.display().to_string()],
                status,
                seconds,
                shard: self.shard.clone(),
                command: self.command.clone(),
                error,
            };
            manifest::append(root, shard, &record)
        };
        let mut failed = vec![];
        for (index, planned) in self.assets.iter().enumerate() {
            // Made by this plan, with its steps, and still readable: not merely a file there.
            let made = Finished::load(&root.join(&planned.run_dir)).is_some_and(|f| {
                f.output == planned.output && f.steps == self.config.total_steps()
            }) && manifest::check_output(&planned.output).is_ok();
            on_event(AssetEvent::Asset {
                index,
                of: self.assets.len(),
                seed: planned.seed,
                skipped: made,
            });
            if made {
                record(planned, ItemStatus::Skipped, 0.0, None)?;
                continue;
            }
            let started = std::time::Instant::now();
            let outcome = self
                .asset(root, index, planned, &all, ctx, device)
                // Dropped at the end of the iteration: one field on the GPU at a time.
                .and_then(|asset| asset.generate(mv, finish, stop, on_event));
            let seconds = started.elapsed().as_secs_f64();
            match outcome {
                Ok(Outcome::Finished) => record(planned, ItemStatus::Done, seconds, None)?,
                Ok(Outcome::Interrupted { next_step }) => {
                    return Ok(PlanOutcome::Interrupted { index, next_step })
                }
                Err(e) => {
                    let message = format!("{e}");
                    record(planned, ItemStatus::Failed, seconds, Some(message.clone()))?;
                    failed.push(format!(
                        "asset {} (item {}): {message}",
                        index + 1,
                        planned.item
                    ));
                }
            }
        }
        if !failed.is_empty() {
            return Err(Error::Input(format!(
                "{} of {} assets failed (recorded in the manifest):\n{}",
                failed.len(),
                self.assets.len(),
                failed.join("\n")
            )));
        }
        Ok(PlanOutcome::Finished)
    }

    /// Asset `index`: resumed from its checkpoint, or started with its row of the plan's
    /// conditioning.
    fn asset(
        &self,
        root: &Path,
        index: usize,
        planned: &PlannedAsset,
        all: &Conditioning,
        ctx: &Arc<GpuContext>,
        device: &Device,
    ) -> Result<Asset> {
        let dir = root.join(&planned.run_dir);
        let output = planned.output.clone();
        if dir.join(FIELD_FILE).is_file() {
            let shared = &self.config;
            return Asset::resume(
                ctx,
                &dir,
                |config| {
                    config.distill.steps = shared.distill.steps;
                    config.refine.geometry_steps = shared.refine.geometry_steps;
                    config.refine.texture_steps = shared.refine.texture_steps;
                },
                device,
                output,
            );
        }
        let mut config = self.config.clone();
        config.distill.seed = planned.seed;
        let conditioning = Conditioning {
            cond: all.cond.narrow(0, index, 1)?,
            uncond: all.uncond.clone(),
        };
        Asset::create(ctx, &dir, config, conditioning, output)
    }
}
