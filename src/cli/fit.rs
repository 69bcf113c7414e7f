//! `dream3d fit`: learn a prompt distribution from a folder of reference images.

use super::progress::Progress;
use anyhow::Context;
use clap::Args;
use dream3d::fit::{self, FitConfig, FitEvent, FitOutcome, RunConfig, RunDir};
use dream3d::prompt::PositionMode;
use dream3d::run_dir::{LATEST_DISTRIBUTION, RUNS_ROOT};
use dream3d::stable_diffusion::StableDiffusion;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Args)]
pub struct FitArgs {
    /// Folder of 2–20 reference images (png, jpeg, webp).
    refs: Option<PathBuf>,
    /// Also write the distribution here (default: dream3d-runs/latest.dist.safetensors); a
    /// resumed run keeps the one it was started with.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// TOML file with any of the options below; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run directory (default: dream3d-runs/fit-<refs folder name>[-N]).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint (`--steps` may extend it).
    #[arg(long, conflicts_with_all = ["refs", "config", "run_dir"])]
    resume: Option<PathBuf>,
    #[command(flatten)]
    model: super::ModelArgs,
    #[command(flatten)]
    options: FitOptions,
}

/// Overrides of [`FitConfig`] fields.
#[derive(Args)]
struct FitOptions {
    /// K: soft prompts [32].
    #[arg(long)]
    prompts: Option<usize>,
    /// L: learned tokens per prompt [4].
    #[arg(long)]
    tokens: Option<usize>,
    /// M: conditionings sampled per image and step [4].
    #[arg(long)]
    samples: Option<usize>,
    /// Images per step [4].
    #[arg(long)]
    batch: Option<usize>,
    /// Optimisation steps [2000].
    #[arg(long)]
    steps: Option<usize>,
    /// AdamW learning rate [1e-3].
    #[arg(long)]
    lr: Option<f64>,
    /// AdamW weight decay [1e-2].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Gradient-norm clip [1.0].
    #[arg(long)]
    grad_clip: Option<f64>,
    /// Min-SNR weighting γ, 0 = off [5].
    #[arg(long)]
    min_snr_gamma: Option<f64>,
    /// Weight of the orthogonality loss [1e-3].
    #[arg(long)]
    orthogonality_weight: Option<f64>,
    /// Crop size in pixels [the model's resolution].
    #[arg(long)]
    resolution: Option<usize>,
    /// Random crops per image, VAE-encoded once [8].
    #[arg(long)]
    crops_per_image: Option<usize>,
    /// Words before the learned tokens [""].
    #[arg(long)]
    prefix: Option<String>,
    /// Words after the learned tokens [""].
    #[arg(long)]
    suffix: Option<String>,
    /// Position embeddings of fixed tokens: `official` (added twice, as the reference code) or `once`.
    #[arg(long, value_parser = parse_position_mode)]
    position_mode: Option<PositionMode>,
    /// Random seed [0].
    #[arg(long)]
    seed: Option<u64>,
    /// Steps between checkpoints [200].
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Recompute text-encoder layers in the backward pass to save memory [true].
    #[arg(long)]
    text_encoder_checkpointing: Option<bool>,
}

fn parse_position_mode(s: &str) -> Result<PositionMode, String> {
    match s {
        "official" => Ok(PositionMode::Official),
        "once" => Ok(PositionMode::Once),
        _ => Err(format!("`{s}`: use `official` or `once`")),
    }
}

impl FitOptions {
    fn apply(self, c: &mut FitConfig) {
        macro_rules! set {
            ($($field:ident),*) => {$(if let Some(v) = self.$field { c.$field = v; })*};
        }
        set!(
            prompts,
            tokens,
            samples,
            batch,
            steps,
            lr,
            weight_decay,
            grad_clip,
            min_snr_gamma,
            orthogonality_weight,
            crops_per_image,
            prefix,
            suffix,
            position_mode,
            seed,
            checkpoint_every,
            text_encoder_checkpointing
        );
        if self.resolution.is_some() {
            c.resolution = self.resolution;
        }
    }
}

/// `dream3d-runs/fit-<name>`, with `-2`, `-3`… when taken.
fn default_run_dir(refs: &Path) -> PathBuf {
    let name = refs
        .file_name()
        .map_or("refs".into(), |n| n.to_string_lossy().into_owned());
    super::first_unused(
        &Path::new(RUNS_ROOT).join(format!("fit-{name}")),
        &["config.toml"],
    )
}

pub fn run(args: FitArgs) -> anyhow::Result<()> {
    let (run, config) = match &args.resume {
        Some(dir) => {
            let (run, mut config) = RunDir::open::<FitConfig>(dir)?;
            if let Some(steps) = args.options.steps {
                config.steps = steps;
            }
            if args.output.is_some() {
                config.output.clone_from(&args.output);
            }
            run.save_config(&config)?;
            (run, config)
        }
        None => {
            let mut config = match &args.config {
                Some(path) => FitConfig::from_toml_file(path)?,
                None => FitConfig::default(),
            };
            if let Some(model) = &args.model.model {
                config.model.clone_from(model);
            }
            if let Some(refs) = &args.refs {
                config.refs.clone_from(refs);
            }
            anyhow::ensure!(
                !config.refs.as_os_str().is_empty(),
                "give the folder of reference images: dream3d fit REFS"
            );
            args.options.apply(&mut config);
            if args.output.is_some() {
                config.output.clone_from(&args.output);
            }
            config.validate()?;
            // Check the images before loading gigabytes of weights.
            fit::images::load_folder(&config.refs)?;
            let root = args
                .run_dir
                .clone()
                .unwrap_or_else(|| default_run_dir(&config.refs));
            (RunDir::create(&root, &config)?, config)
        }
    };
    eprintln!("run directory {}", run.root.display());

    let files = args.model.lookup().resolve(&config.model)?;
    let device = dream3d::device::best_device()?;
    let sd = StableDiffusion::load(files, dream3d::device::default_dtype(&device), &device)
        .with_context(|| format!("loading model `{}`", config.model))?;

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    let progress = Progress::new(config.steps as u64, 0);
    let outcome = fit::fit(&config, &sd, &run, &stop, |event| show(&progress, &event));
    progress.finish();
    match outcome? {
        FitOutcome::Finished(distribution) => {
            let out = config
                .output
                .clone()
                .unwrap_or_else(|| PathBuf::from(LATEST_DISTRIBUTION));
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            distribution.save(&out)?;
            eprintln!(
                "prompt distribution written to {} (and {})",
                out.display(),
                run.path(dream3d::fit::DISTRIBUTION_FILE).display()
            );
        }
        FitOutcome::Interrupted { next_step } => {
            eprintln!(
                "interrupted: checkpoint at step {next_step} in {}; continue with: dream3d fit --resume {}",
                run.checkpoint_path().display(),
                run.root.display()
            );
        }
    }
    Ok(())
}

/// A fit's events on the progress display.
fn show(progress: &Progress, event: &FitEvent) {
    match event {
        FitEvent::Ready {
            images,
            crops,
            resolution,
            start_step,
        } => progress.line(format!(
            "{images} images × {crops} crops at {resolution} px; starting at step {start_step}"
        )),
        FitEvent::Step(m) => progress.step(
            m.step as u64 + 1,
            format!(
                "loss {:.4} (diffusion {:.4}, orthogonality {:.4}) |g| {:.3} {:.2} it/s",
                m.loss, m.diffusion, m.orthogonality, m.grad_norm, m.it_per_s
            ),
        ),
        FitEvent::Checkpoint { next_step } => {
            progress.line(format!("checkpoint at step {next_step}"))
        }
    }
}
