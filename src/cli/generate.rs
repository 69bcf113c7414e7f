//! `dream3d generate`: 3D assets from a prompt distribution. Each asset samples one prompt
//! from the distribution (optionally edited), distils MVDream into a field on the GPU, and is
//! exported as glTF with a turntable GIF.

use super::progress::Progress;
use super::sample::multiview::{load_mvdream, DEFAULT_MODEL};
use super::sample::source::{chosen_distribution, MixSpec, Source};
use anyhow::{bail, Context};
use clap::Args;
use dream3d::distill::guidance::MultiViewGuidance;
use dream3d::distill::latents::LatentEncoder;
use dream3d::distill::run::{
    self, Conditioning, GenerateConfig, GenerateEvent, Outcome, FIELD_FILE,
};
use dream3d::distill::step::Distiller;
use dream3d::gpu::{GpuContext, GpuField};
use dream3d::mesh::export::{export_glb, Albedo, ExportSettings};
use dream3d::prompt::Edit;
use dream3d::run_dir::{RunConfig, RunDir};
use dream3d::sample::Models;
use dream3d::turntable::Turntable;
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
    /// Isosurface grid points per side for the export.
    #[arg(long, default_value_t = 256)]
    resolution: u32,
    /// Density of the exported surface (threestudio's 25).
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
    let outputs: Vec<PathBuf> = (0..args.assets).map(|i| output_path(&args, i)).collect();
    for out in &outputs {
        if out.exists() && !args.force {
            bail!("{} exists: pass --force to replace it", out.display());
        }
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            dream3d::files::ensure_writable_dir(dir)?;
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

    // Runs to do: (run directory, its config, the field to start from, the output).
    let mut jobs = vec![];
    let mv;
    if let Some(dir) = &args.resume {
        let (run, mut config) = RunDir::open::<GenerateConfig>(dir)?;
        if let Some(steps) = args.steps {
            config.distill.steps = steps;
        }
        config.validate()?;
        mv = load_mvdream(
            &args.model.lookup(),
            &config.model,
            args.mvdream_config.as_deref(),
            dtype,
            &device,
        )?;
        let field = GpuField::load(ctx.clone(), &run.path(FIELD_FILE))
            .with_context(|| format!("reading the checkpoint of {}", run.root.display()))?;
        let conditioning = Conditioning::load(&run, &device)?;
        eprintln!("resuming {} at step {}", run.root.display(), field.step);
        jobs.push((run, config, field, conditioning, outputs[0].clone()));
    } else {
        let mut config = match &args.config {
            Some(path) => GenerateConfig::from_toml_file(path)?,
            None => GenerateConfig::default(),
        };
        if let Some(steps) = args.steps {
            config.distill.steps = steps;
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
        mv = load_mvdream(
            &args.model.lookup(),
            &args.mvdream,
            args.mvdream_config.as_deref(),
            dtype,
            &device,
        )?;
        let models = Models::from(&mv);
        let gaussian = source.gaussian(models, edit.as_ref())?;
        config.conditioning = source.describe(edit.as_ref());
        eprintln!("conditioning: {}", config.conditioning);
        let uncond = models.encode_text(&args.negative)?;
        let seed = args.seed.unwrap_or_else(|| rand::random::<u32>() as u64);
        for (i, out) in outputs.iter().enumerate() {
            let asset_seed = seed + i as u64;
            let mut rng = rand::rngs::StdRng::seed_from_u64(asset_seed);
            let conditioning = Conditioning {
                cond: gaussian.sample(&mut rng)?.unsqueeze(0)?.to_dtype(dtype)?,
                uncond: uncond.clone(),
            };
            let mut asset_config = config.clone();
            asset_config.distill.seed = asset_seed;
            let root = match &args.run_dir {
                Some(dir) if args.assets == 1 => dir.clone(),
                Some(dir) => dir.join(format!("asset-{i}")),
                None => super::first_unused(
                    &Path::new(super::fit::RUNS_ROOT).join("generate"),
                    "config.toml",
                ),
            };
            let run = RunDir::create(&root, &asset_config)?;
            conditioning.save(&run)?;
            let f = &asset_config.distill.field;
            let field = GpuField::new(ctx.clone(), f.clone(), &f.init_params(asset_seed))?;
            eprintln!(
                "asset {i}: seed {asset_seed}, run directory {}",
                run.root.display()
            );
            jobs.push((run, asset_config, field, conditioning, out.clone()));
        }
    }

    for (run, config, field, conditioning, output) in jobs {
        let guidance = MultiViewGuidance {
            unet: &mv.unet,
            schedule: &mv.schedule,
            cond: conditioning.cond,
            uncond: conditioning.uncond,
            views: config.distill.views,
            settings: config.guidance,
        };
        let encoder = LatentEncoder {
            vae: &mv.vae,
            size: config.distill.image_size,
        };
        let mut distiller = Distiller {
            field,
            settings: config.distill.clone(),
        };
        let progress = Progress::new(config.distill.steps, distiller.field.step);
        let outcome = run::run(
            &config,
            &mut distiller,
            &guidance,
            &encoder,
            &run,
            &stop,
            |e| show(&progress, &e),
        );
        progress.finish();
        match outcome.with_context(|| format!("run {}", run.root.display()))? {
            Outcome::Interrupted { next_step } => {
                eprintln!(
                    "interrupted: checkpoint at step {next_step} in {}; continue with: dream3d generate --resume {0}; export it now with: dream3d export {0}",
                    run.root.display()
                );
                return Ok(());
            }
            Outcome::Finished => finish(&args, &config, &mut distiller.field, &run, &output)?,
        }
    }
    Ok(())
}

fn output_path(args: &GenerateArgs, i: usize) -> PathBuf {
    if args.assets == 1 {
        return args.output.clone();
    }
    let stem = args
        .output
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("out");
    args.output.with_file_name(format!("{stem}-{i}.glb"))
}

/// The asset's mesh and turntable.
fn finish(
    args: &GenerateArgs,
    config: &GenerateConfig,
    field: &mut GpuField,
    run: &RunDir,
    output: &Path,
) -> anyhow::Result<()> {
    let settings = ExportSettings {
        resolution: args.resolution,
        threshold: args.threshold,
        albedo: args.texture.map_or(Albedo::Vertex, Albedo::Texture),
        ..ExportSettings::default()
    };
    let metadata = serde_json::json!({
        "source": run.root.display().to_string(),
        "step": field.step,
        "conditioning": config.conditioning,
    });
    let mesh = export_glb(field, &settings, output, metadata).with_context(|| {
        format!(
            "exporting {} (the field is kept: try dream3d export {} --threshold …)",
            output.display(),
            run.root.display()
        )
    })?;
    eprintln!(
        "{} triangles written to {}",
        mesh.triangles.len(),
        output.display()
    );
    if args.frames > 0 {
        let turntable = Turntable {
            frames: args.frames,
            ..Turntable::default()
        };
        let frames = turntable.render(|camera| turntable.field_view(field, camera), |_| {})?;
        let gif = run.path("turntable.gif");
        turntable.write_gif(&gif, &frames)?;
        eprintln!("turntable: {}", gif.display());
    }
    Ok(())
}

/// A run's events on the progress display.
fn show(progress: &Progress, event: &GenerateEvent) {
    match event {
        GenerateEvent::Step(r) => progress.step(
            r.step + 1,
            format!("{}² t={} loss {:.4}", r.size, r.t, r.loss),
        ),
        GenerateEvent::Checkpoint { next_step } => {
            progress.line(format!("checkpoint at step {next_step}"))
        }
        GenerateEvent::Validation { path, .. } => {
            progress.line(format!("validation views: {}", path.display()))
        }
    }
}
