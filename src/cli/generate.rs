//! `dream3d generate`: 3D assets from a prompt distribution. Each asset samples one prompt
//! from the distribution (optionally edited), distils MVDream into a field on the GPU, and is
//! exported as glTF with a turntable GIF.

use super::progress::Progress;
use super::sample::multiview::{load_mvdream, DEFAULT_MODEL};
use anyhow::{bail, Context};
use candle_core::Tensor;
use clap::Args;
use dream3d::conditioning::{chosen_distribution, MixSpec, Source};
use dream3d::distill::assets::{
    Asset, AssetEvent, Finish, Plan, PlanOutcome, PlannedAsset, PLAN_FILE,
};
use dream3d::distill::refine::Phase;
use dream3d::distill::run::{Conditioning, GenerateConfig, GenerateEvent, Outcome};
use dream3d::gpu::GpuContext;
use dream3d::mesh::export::{Albedo, ExportSettings};
use dream3d::prompt::Edit;
use dream3d::run_dir::RunConfig;
use dream3d::sample::Models;
use dream3d::shard::Shard;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// threestudio's negative prompt for MVDream.
pub const NEGATIVE: &str = "ugly, bad anatomy, blurry, pixelated obscure, unnatural colors, poor lighting, dull, and unclear, cropped, lowres, low quality, artifacts, duplicate, morbid, mutilated, poorly drawn face, deformed, dehydrated, bad proportions";

#[derive(Args)]
pub struct GenerateArgs {
    /// Prompt distribution [dream3d-runs/latest.dist.safetensors, which `fit` leaves].
    distribution: Option<PathBuf>,
    /// A plain prompt instead of a distribution.
    #[arg(long, conflicts_with = "distribution")]
    prompt: Option<String>,
    /// Words appended after the learned tokens ("made of gold"), or a template with `*` where
    /// the learned tokens go.
    #[arg(long)]
    edit: Option<String>,
    /// Variance scale γ of the distribution.
    #[arg(long, default_value_t = 1.0)]
    gamma: f64,
    #[arg(long, default_value = NEGATIVE)]
    negative: String,
    /// Views denoised together (MVDream's 4).
    #[arg(long, default_value_t = 4)]
    views: usize,
    /// Assets to make, each from its own prompt sample (seed, seed + 1, …).
    #[arg(long, default_value_t = 1)]
    assets: usize,
    /// Make only assets k with k mod N = I (of --assets), in the --run-dir every shard shares;
    /// rerun, it continues where it stopped and skips what is made [from Slurm's array task
    /// or, with --shards, Kubernetes' completion index].
    #[arg(long, value_name = "I/N", conflicts_with = "resume")]
    shard: Option<String>,
    /// Shards in all, with Kubernetes' JOB_COMPLETION_INDEX.
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    shards: Option<u32>,
    #[arg(long)]
    seed: Option<u64>,
    /// Output .glb (with several assets: NAME-i.glb).
    #[arg(short, long, default_value = "out.glb")]
    output: PathBuf,
    /// Replace existing outputs.
    #[arg(long)]
    force: bool,
    /// TOML file of generate settings (a run's config.toml works); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Optimisation steps [10000].
    #[arg(long)]
    steps: Option<u64>,
    /// Steps of each phase of the mesh stage after the field: N geometry steps (DMTet on normal
    /// maps), then N texture steps; 0 exports the field's isosurface instead [1000].
    #[arg(long, value_name = "N")]
    refine_steps: Option<u64>,
    /// Classifier-free guidance scale [50].
    #[arg(long)]
    guidance: Option<f64>,
    /// Run directory [dream3d-runs/generate-N].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint (`--steps` may extend it).
    #[arg(long, conflicts_with_all = ["distribution", "prompt", "edit", "config", "run_dir", "assets"])]
    resume: Option<PathBuf>,
    /// MVDream: a checkpoint file, a folder, or a hub repo id.
    #[arg(long, default_value = DEFAULT_MODEL)]
    mvdream: String,
    /// MVDream architecture in the official YAML format.
    #[arg(long, value_name = "FILE.yaml")]
    mvdream_config: Option<PathBuf>,
    /// Isosurface grid points per side for the export without the mesh stage
    /// (--refine-steps 0); the mesh stage's grid is `[refine] resolution` in the config.
    #[arg(long, default_value_t = 256)]
    resolution: u32,
    /// Density of the exported isosurface without the mesh stage (threestudio's 25); the mesh
    /// stage starts from `[refine] threshold`.
    #[arg(long, default_value_t = 25.0)]
    threshold: f32,
    /// Bake the albedo into an N×N texture instead of vertex colours.
    #[arg(long, value_name = "N")]
    texture: Option<u32>,
    /// Turntable frames (0: none).
    #[arg(long, default_value_t = 120)]
    frames: u32,
    #[command(flatten)]
    model: super::ModelArgs,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.assets >= 1, "--assets must be at least 1");
    anyhow::ensure!(
        args.views == 4,
        "--views {}: MVDream was trained on 4 views 90° apart; use --views 4",
        args.views
    );
    let (shard, sharded) = match &args.resume {
        Some(_) => (Shard::WHOLE, false),
        None => match super::shard_of(args.shard.as_deref(), args.shards, args.assets, "assets")? {
            Some(found) => found,
            None => return Ok(()),
        },
    };
    if sharded {
        anyhow::ensure!(
            args.run_dir.is_some() && args.seed.is_some(),
            "a sharded generate needs --run-dir DIR and --seed S, the same for every shard, so that the shards make the assets one process would"
        );
    }
    let resuming_plan = args
        .resume
        .as_deref()
        .is_some_and(|dir| Plan::exists(dir, Shard::WHOLE));
    // A shard started again (the scheduler requeued it) finds its plan and goes on with it.
    let continuing_shard = sharded
        && args
            .run_dir
            .as_deref()
            .is_some_and(|dir| Plan::exists(dir, shard));
    let outputs: Vec<PathBuf> = (0..args.assets)
        .map(|i| output_path(&args, i, sharded))
        .collect();
    if !resuming_plan && !sharded {
        for out in &outputs {
            if out.exists() && !args.force {
                bail!("{} exists: pass --force to replace it", out.display());
            }
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                dream3d::files::ensure_writable_dir(dir)?;
            }
        }
    }
    let device = dream3d::device::best_device()?;
    let dtype = dream3d::device::default_dtype(&device);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    let ctx = Arc::new(GpuContext::new()?);
    eprintln!("GPU: {}", ctx.describe());
    let finish = Finish {
        export: ExportSettings {
            resolution: args.resolution,
            threshold: args.threshold,
            albedo: args.texture.map_or(Albedo::Vertex, Albedo::Texture),
            ..ExportSettings::default()
        },
        frames: args.frames,
    };
    let load_mv = |name: &str| {
        load_mvdream(
            &args.model.lookup(),
            name,
            args.mvdream_config.as_deref(),
            dtype,
            &device,
        )
    };
    let mut display = Display::default();

    if continuing_shard {
        let dir = args.run_dir.as_deref().expect("checked above");
        let plan = Plan::open(dir, shard)?;
        eprintln!("continuing the plan of shard {shard} in {}", dir.display());
        let mv = load_mv(&plan.config.model)?;
        let outcome = plan.run(dir, &ctx, &mv, &finish, &stop, &device, &mut |e| {
            display.show(e)
        });
        display.finish();
        return report_plan(outcome?, &plan, dir);
    }
    if let Some(dir) = &args.resume {
        if resuming_plan {
            let mut plan = Plan::open(dir, Shard::WHOLE)?;
            if args.steps.is_some() || args.refine_steps.is_some() {
                plan.set_steps(dir, args.steps, args.refine_steps)?;
            }
            let mv = load_mv(&plan.config.model)?;
            let outcome = plan.run(dir, &ctx, &mv, &finish, &stop, &device, &mut |e| {
                display.show(e)
            });
            display.finish();
            return report_plan(outcome?, &plan, dir);
        }
        let adjust = |config: &mut GenerateConfig| {
            if let Some(steps) = args.steps {
                config.distill.steps = steps;
            }
            if let Some(n) = args.refine_steps {
                config.refine.geometry_steps = n;
                config.refine.texture_steps = n;
            }
        };
        let asset = Asset::resume(&ctx, dir, adjust, &device, outputs[0].clone())
            .with_context(|| format!("resuming {}", dir.display()))?;
        let mv = load_mv(&asset.config.model)?;
        eprintln!("resuming {}", dir.display());
        let outcome = asset.generate(&mv, &finish, &stop, &mut |e| display.show(e));
        display.finish();
        return report_asset(outcome, dir);
    }

    let mut config = match &args.config {
        Some(path) => GenerateConfig::from_toml_file(path)?,
        None => GenerateConfig::default(),
    };
    if let Some(steps) = args.steps {
        config.distill.steps = steps;
    }
    if let Some(n) = args.refine_steps {
        config.refine.geometry_steps = n;
        config.refine.texture_steps = n;
    }
    if let Some(g) = args.guidance {
        config.guidance.scale = g;
    }
    config.model = args.mvdream.clone();
    config.validate()?;
    let edit = args.edit.as_deref().map(Edit::parse).transpose()?;
    let source = match &args.prompt {
        Some(p) => {
            anyhow::ensure!(edit.is_none(), "--edit changes a prompt distribution; with --prompt, write the words into the prompt itself");
            Source::Prompt(p.clone())
        }
        None => {
            let path = chosen_distribution(args.distribution.as_deref())?;
            eprintln!("prompt distribution: {}", path.display());
            Source::distributions(
                vec![MixSpec {
                    path,
                    weight: 1.0,
                    gamma: None,
                }],
                args.gamma,
            )?
        }
    };
    let mv = load_mv(&args.mvdream)?;
    let models = Models::from(&mv);
    let gaussian = source.gaussian(models, edit.as_ref())?;
    config.conditioning = source.describe(edit.as_ref());
    eprintln!("conditioning: {}", config.conditioning);
    let uncond = models.encode_text(&args.negative)?;
    let seed = args.seed.unwrap_or_else(|| rand::random::<u32>() as u64);
    // One prompt sample per asset, seeded by the asset's seed alone.
    let items = shard.items(args.assets);
    let conds = items
        .iter()
        .map(|&i| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed + i as u64);
            Ok(gaussian.sample(&mut rng)?.unsqueeze(0)?.to_dtype(dtype)?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let root = args.run_dir.clone().unwrap_or_else(|| {
        super::first_unused(
            &Path::new(dream3d::run_dir::RUNS_ROOT).join("generate"),
            &["config.toml", PLAN_FILE],
        )
    });
    if args.assets == 1 && !sharded {
        config.distill.seed = seed;
        let conditioning = Conditioning {
            cond: conds[0].clone(),
            uncond,
        };
        let asset = Asset::create(&ctx, &root, config, conditioning, outputs[0].clone())?;
        eprintln!("seed {seed}, run directory {}", root.display());
        let outcome = asset.generate(&mv, &finish, &stop, &mut |e| display.show(e));
        display.finish();
        return report_asset(outcome, &root);
    }
    let assets = items
        .iter()
        .map(|&i| {
            let out = &outputs[i];
            Ok(PlannedAsset {
                item: i,
                seed: seed + i as u64,
                run_dir: format!("asset-{i:04}"),
                output: std::path::absolute(out)
                    .with_context(|| format!("resolving {}", out.display()))?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let conditioning = Conditioning {
        cond: Tensor::cat(&conds, 0)?,
        uncond,
    };
    let plan = Plan {
        config,
        items: args.assets,
        shard: shard.to_string(),
        command: super::job_command()?,
        assets,
    };
    let plan = Plan::create(&root, plan, &conditioning)?;
    eprintln!(
        "{} of {} assets (seeds {seed} + item), plan in {}",
        items.len(),
        args.assets,
        root.display()
    );
    let outcome = plan.run(&root, &ctx, &mv, &finish, &stop, &device, &mut |e| {
        display.show(e)
    });
    display.finish();
    report_plan(outcome?, &plan, &root)
}

/// Asset `i`'s output: `-o` itself for a single unsharded asset, else NAME-NNNN.glb.
fn output_path(args: &GenerateArgs, i: usize, sharded: bool) -> PathBuf {
    if args.assets == 1 && !sharded {
        return args.output.clone();
    }
    let stem = args
        .output
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("out");
    args.output.with_file_name(format!("{stem}-{i:04}.glb"))
}

fn report_asset(outcome: dream3d::Result<Outcome>, run: &Path) -> anyhow::Result<()> {
    match outcome.with_context(|| format!("run {}", run.display()))? {
        Outcome::Interrupted { next_step } => eprintln!(
            "interrupted: checkpoint at step {next_step} in {}; continue with: dream3d generate --resume {0}; export it now with: dream3d export {0}",
            run.display()
        ),
        Outcome::Finished => {}
    }
    Ok(())
}

fn report_plan(outcome: PlanOutcome, plan: &Plan, root: &Path) -> anyhow::Result<()> {
    if matches!(outcome, PlanOutcome::Finished) && plan.shard()?.count > 1 {
        eprintln!(
            "shard {} done; when every shard has run: dream3d collect {}",
            plan.shard,
            root.display()
        );
    }
    if let PlanOutcome::Interrupted { index, next_step } = outcome {
        // A shard's plan goes on by its own command again; a whole plan by --resume.
        let shard = plan.shard()?;
        let again = if shard.is_whole() {
            format!("dream3d generate --resume {}", root.display())
        } else {
            format!("{} --shard {shard}", plan.command)
        };
        eprintln!(
            "interrupted in asset {} of {}: checkpoint at step {next_step} in {}; continue every asset with: {again}",
            index + 1,
            plan.assets.len(),
            root.join(&plan.assets[index].run_dir).display(),
        );
    }
    Ok(())
}

/// Assets' events on the terminal: a progress display per asset's run.
#[derive(Default)]
struct Display {
    progress: Option<Progress>,
}

impl Display {
    fn show(&mut self, event: AssetEvent) {
        match event {
            AssetEvent::Asset {
                index,
                of,
                seed,
                skipped,
            } => eprintln!(
                "asset {}/{of}: seed {seed}{}",
                index + 1,
                if skipped { ", finished earlier" } else { "" }
            ),
            AssetEvent::Distilling {
                run,
                from_step,
                steps,
            } => {
                self.finish();
                eprintln!("run directory {}", run.display());
                self.progress = Some(Progress::new(steps, from_step));
            }
            AssetEvent::Run(e) => {
                if let Some(progress) = &self.progress {
                    show(progress, &e)
                }
            }
            AssetEvent::Exported { path, triangles } => {
                self.finish();
                eprintln!("{triangles} triangles written to {}", path.display())
            }
            AssetEvent::Turntable { path } => eprintln!("turntable: {}", path.display()),
        }
    }

    fn finish(&mut self) {
        if let Some(progress) = self.progress.take() {
            progress.finish();
        }
    }
}

/// A run's events on the progress display.
fn show(progress: &Progress, event: &GenerateEvent) {
    match event {
        GenerateEvent::Step(r) => progress.step(
            r.step + 1,
            format!("{}² t={} loss {:.4}", r.size, r.t, r.loss),
        ),
        GenerateEvent::Refine(r) => progress.step(
            r.step + 1,
            format!(
                "{} {}² t={} loss {:.4}, {} triangles",
                match r.phase {
                    Phase::Geometry => "geometry",
                    Phase::Texture => "texture",
                },
                r.size,
                r.t,
                r.loss,
                r.triangles
            ),
        ),
        GenerateEvent::Checkpoint { next_step } => {
            progress.line(format!("checkpoint at step {next_step}"))
        }
        GenerateEvent::Validation { path, .. } => {
            progress.line(format!("validation views: {}", path.display()))
        }
    }
}
