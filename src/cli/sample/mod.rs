//! `dream3d sample`: new images from a prompt distribution (or a plain prompt), with variance
//! scaling, composition and text edits; numbered PNGs, a contact sheet and a sidecar.

mod init_noise;
pub mod multiview;
mod sidecar;

use super::shell_command;
use anyhow::{bail, Context};
use clap::Args;
use dream3d::conditioning::{self, MixSpec, Source};
use dream3d::imaging::{contact_sheet, save_png, square_columns};
use dream3d::manifest::{self, ItemRecord, ItemStatus};
use dream3d::mvdream::MvdreamModel;
use dream3d::prompt::Edit;
use dream3d::sample::{ImageSampler, ImageSeed, Models, SampleSettings};
use dream3d::stable_diffusion::StableDiffusion;
use indicatif::{ProgressBar, ProgressStyle};
use init_noise::InitNoise;
use multiview::MultiViewArgs;
use sidecar::{absolute_if_local, ImageRecord, MixRecord, Sidecar};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct SampleArgs {
    /// Prompt distribution file [default: the latest one `dream3d fit` wrote,
    /// dream3d-runs/latest.dist.safetensors].
    #[arg(conflicts_with_all = ["mix", "prompt"])]
    distribution: Option<PathBuf>,
    /// Compose distributions: PATH:WEIGHT[:GAMMA], repeated; weights sum to 1.
    #[arg(long, value_parser = conditioning::parse_mix, conflicts_with = "prompt")]
    mix: Vec<MixSpec>,
    /// A plain text prompt instead of a distribution (for caption baselines).
    #[arg(long)]
    prompt: Option<String>,
    /// Words after the learned tokens ("made of gold"), or a template with `*` where they go
    /// ("a photo of * made of gold", "pink *"); μ and σ are re-fitted over the K prompts.
    #[arg(long)]
    edit: Option<String>,
    /// Variance scale γ (σ → γσ); 0 gives the mean prompt.
    #[arg(long, default_value_t = 1.0)]
    gamma: f64,
    /// Number of images (with --mvdream: objects, each of --views images).
    #[arg(short = 'n', long, default_value_t = 4)]
    images: usize,
    /// Output folder [default: dream3d-runs/samples, -2, -3… when taken].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Overwrite an output folder that already holds samples.
    #[arg(long)]
    force: bool,
    /// Negative prompt (the unconditional half of guidance).
    #[arg(long, default_value = "")]
    negative: String,
    /// DDIM steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    /// Image width in pixels [the model's resolution; 256 with --mvdream].
    #[arg(long)]
    width: Option<usize>,
    /// Image height in pixels [the model's resolution; 256 with --mvdream].
    #[arg(long)]
    height: Option<usize>,
    /// Images (with --mvdream: objects) per UNet call.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seed of the first image (image i uses seed + i) [random, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Make only images k with k mod N = I (of -n), into the -o folder every shard shares;
    /// images found made are skipped [from Slurm's array task or, with --shards, Kubernetes'
    /// completion index].
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Shards in all, with Kubernetes' JOB_COMPLETION_INDEX.
    #[arg(long, value_name = "N")]
    shards: Option<u32>,
    /// Initial latents, FILE.safetensors[:TENSOR], N × C × h × w (one row per image, or one
    /// row shared by all), like diffusers' `latents=`.
    #[arg(long)]
    init_noise: Option<String>,
    #[command(flatten)]
    model: super::ModelArgs,
    #[command(flatten)]
    multiview: MultiViewArgs,
}

/// The model sampled with.
enum Loaded {
    StableDiffusion(Box<StableDiffusion>),
    MultiView(Box<MvdreamModel>),
}

impl Loaded {
    fn models(&self) -> Models<'_> {
        match self {
            Self::StableDiffusion(sd) => Models::from(sd.as_ref()),
            Self::MultiView(mv) => Models::from(mv.as_ref()),
        }
    }
}

/// Object `i`'s files: `NNNN.png`, or its views `NNNN-view{v}.png` and their strip `NNNN.png`.
fn object_files(i: usize, views: usize) -> Vec<String> {
    let strip = format!("{i:04}.png");
    if views == 1 {
        return vec![strip];
    }
    let mut files: Vec<String> = (0..views).map(|v| format!("{i:04}-view{v}.png")).collect();
    files.push(strip);
    files
}

/// Writes object `i`: `NNNN.png`, or its views `NNNN-view{v}.png` and a strip `NNNN.png`.
fn save_object(out: &Path, i: usize, views: &[image::RgbImage]) -> anyhow::Result<Vec<String>> {
    let strip = format!("{i:04}.png");
    if let [single] = views {
        save_png(&out.join(&strip), single)?;
        return Ok(vec![strip]);
    }
    let mut files = vec![];
    for (v, view) in views.iter().enumerate() {
        let file = format!("{i:04}-view{v}.png");
        save_png(&out.join(&file), view)?;
        files.push(file);
    }
    save_png(&out.join(&strip), &contact_sheet(views, views.len()))?;
    files.push(strip);
    Ok(files)
}

const GRID: &str = "grid.png";

pub fn run(args: SampleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.images > 0, "-n must be at least 1");
    args.multiview.check()?;
    let edit = args.edit.as_deref().map(Edit::parse).transpose()?;
    let source = resolve_source(&args)?;
    if edit.is_some() && matches!(source, Source::Prompt(_)) {
        bail!("--edit changes a prompt distribution; with --prompt, write the words into the prompt itself");
    }
    let multiview = args.multiview.mvdream.is_some();
    let views = if multiview { args.multiview.views } else { 1 };
    let init = args
        .init_noise
        .as_deref()
        .map(|spec| InitNoise::read(spec, views))
        .transpose()?;
    let Some((shard, sharded)) =
        super::shard_of(args.shard.as_deref(), args.shards, args.images, "images")?
    else {
        return Ok(());
    };
    if sharded {
        anyhow::ensure!(
            args.output.is_some() && args.seed.is_some(),
            "a sharded sample needs -o DIR and --seed S, the same for every shard, so that the shards fill one folder with the images one process would make"
        );
        anyhow::ensure!(
            init.is_none(),
            "--init-noise cannot be sharded: run it in one process"
        );
    }
    let out = args.output.clone().unwrap_or_else(|| {
        super::first_unused(
            &Path::new(dream3d::run_dir::RUNS_ROOT).join("samples"),
            &[sidecar::FILE],
        )
    });
    // Shards share the folder: what is already made there is skipped instead.
    if !sharded && out.join(sidecar::FILE).exists() && !args.force {
        bail!(
            "{} already holds samples ({}): choose another -o, or pass --force to overwrite them",
            out.display(),
            sidecar::FILE
        );
    }
    dream3d::files::ensure_writable_dir(&out)?;

    let device = dream3d::device::best_device()?;
    let dtype = dream3d::device::default_dtype(&device);
    let (loaded, model) = match &args.multiview.mvdream {
        Some(name) => {
            let mv = multiview::load_mvdream(
                &args.model.lookup(),
                name,
                args.multiview.mvdream_config.as_deref(),
                dtype,
                &device,
            )?;
            (Loaded::MultiView(Box::new(mv)), name.clone())
        }
        None => {
            let model = args
                .model
                .model
                .clone()
                .unwrap_or_else(|| source.default_model());
            let files = args.model.lookup().resolve(&model)?;
            let sd = StableDiffusion::load(files, dtype, &device)
                .with_context(|| format!("loading model `{model}`"))?;
            (Loaded::StableDiffusion(Box::new(sd)), model)
        }
    };
    let models = loaded.models();
    let resolution = if multiview {
        multiview::RESOLUTION
    } else {
        models.resolution().unwrap_or(512)
    };
    let settings = SampleSettings {
        steps: args.steps,
        guidance: args.guidance,
        width: args.width.unwrap_or(resolution),
        height: args.height.unwrap_or(resolution),
        batch: args.batch,
    };
    let sampler = ImageSampler::new(models, settings.clone(), &args.negative)?;
    let init_rows = match &init {
        Some(noise) => Some(noise.rows(args.images, sampler.latent_shape())?),
        None => None,
    };
    let cameras = multiview
        .then(|| args.multiview.cameras(models.device()))
        .transpose()?;
    let source = match source {
        Source::Prompt(p) if multiview => Source::Prompt(args.multiview.prompt(&p)),
        other => other,
    };
    let gaussian = source.gaussian(models, edit.as_ref())?;
    let conditioning = source.describe(edit.as_ref());
    eprintln!("conditioning: {conditioning}");

    let seed = args.seed.unwrap_or_else(|| rand::random::<u32>() as u64);
    eprintln!("seed {seed} (object i uses seed + i)");
    let kept = keep_distributions(&source, &out)?;
    let pinned = args.model.pinned_revision(&model);
    let regenerate = |seed: u64, images: usize, init_noise: Option<&str>| {
        let mut a: Vec<String> = vec!["dream3d".into(), "sample".into()];
        a.extend(kept.iter().flat_map(|m| {
            [
                "--mix".into(),
                format!("{}:{}:{}", m.path, m.weight, m.gamma),
            ]
        }));
        if let Some(p) = &args.prompt {
            a.extend(["--prompt".into(), p.clone()]);
        }
        if let Some(e) = &args.edit {
            a.extend(["--edit".into(), e.clone()]);
        }
        a.extend(args.multiview.flags());
        // The weights must be the same files: the revision (as a commit) and precision too.
        let revision = pinned.as_deref().unwrap_or(&args.model.revision);
        if revision != super::DEFAULT_REVISION {
            a.extend(["--revision".into(), revision.to_string()]);
        }
        if args.model.fp16 {
            a.push("--fp16".into());
        }
        let model_flag = (!multiview).then(|| ("--model", absolute_if_local(&model)));
        for (flag, value) in model_flag.into_iter().chain([
            ("--negative", args.negative.clone()),
            ("--steps", settings.steps.to_string()),
            ("--guidance", settings.guidance.to_string()),
            ("--width", settings.width.to_string()),
            ("--height", settings.height.to_string()),
            ("--seed", seed.to_string()),
            ("-n", images.to_string()),
        ]) {
            a.extend([flag.into(), value]);
        }
        if let Some(noise) = init_noise {
            a.extend(["--init-noise".into(), noise.into()]);
        }
        shell_command(&a)
    };
    let shared_noise = init
        .as_ref()
        .filter(|n| n.shared())
        .map(|n| n.spec.as_str());
    let mut record = Sidecar {
        dream3d_version: env!("CARGO_PKG_VERSION").into(),
        model: model.clone(),
        distributions: kept.clone(),
        prompt: args.prompt.clone(),
        edit: args.edit.clone(),
        conditioning,
        negative: args.negative.clone(),
        settings: settings.clone(),
        views,
        seed,
        init_noise: init.as_ref().map(|n| n.spec.clone()),
        command: regenerate(seed, args.images, init.as_ref().map(|n| n.spec.as_str())),
        images: Vec::with_capacity(args.images),
    };
    // What every shard runs: the whole command, into this folder.
    let job = format!(
        "{} -o {}",
        record.command,
        shell_command(&[std::path::absolute(&out)?.display().to_string()])
    );
    let conditioning = record.conditioning.clone();
    let manifest_record = |item: usize, files: Vec<String>, status, seconds| ItemRecord {
        item,
        of: args.images,
        seed: seed.wrapping_add(item as u64),
        conditioning: conditioning.clone(),
        outputs: files,
        status,
        seconds,
        shard: shard.to_string(),
        command: job.clone(),
        error: None,
    };

    let mine = shard.items(args.images);
    let mut indices = vec![];
    for &i in &mine {
        let files = object_files(i, views);
        // A shard's images already made (by a run the scheduler killed or requeued) are kept.
        if sharded && manifest::outputs_valid(&out, &files) {
            manifest::append(
                &out,
                shard,
                &manifest_record(i, files.clone(), ItemStatus::Skipped, 0.0),
            )?;
            // Kept in this shard's sidecar as an earlier run made it (no --init-noise here).
            let image_seed = seed.wrapping_add(i as u64);
            record.images.push(ImageRecord {
                files,
                seed: image_seed,
                init_noise_row: None,
                command: Some(regenerate(image_seed, 1, None)),
            });
        } else {
            indices.push(i);
        }
    }
    if indices.len() < mine.len() {
        eprintln!(
            "{} of this process's {} images found made: skipped",
            mine.len() - indices.len(),
            mine.len()
        );
    }
    let progress = Progress::new(indices.len(), settings.steps);
    let mut all = Vec::with_capacity(indices.len() * views);
    for chunk in indices.chunks(settings.batch) {
        let started = std::time::Instant::now();
        let seeds: Vec<ImageSeed> = chunk
            .iter()
            .map(|&i| ImageSeed {
                seed: seed.wrapping_add(i as u64),
                init_latents: init_rows.as_ref().map(|rows| rows[i].clone()),
            })
            .collect();
        let objects = sampler.objects(&gaussian, &seeds, cameras.as_ref(), || {
            progress.step(chunk.len())
        })?;
        let seconds = started.elapsed().as_secs_f64() / chunk.len() as f64;
        for ((&i, object), s) in chunk.iter().zip(&objects).zip(&seeds) {
            let files = save_object(&out, i, object)?;
            manifest::append(
                &out,
                shard,
                &manifest_record(i, files.clone(), ItemStatus::Done, seconds),
            )?;
            let from_row = init.as_ref().map(|n| if n.shared() { 0 } else { i });
            record.images.push(ImageRecord {
                files,
                seed: s.seed,
                init_noise_row: from_row,
                command: (init.is_none() || shared_noise.is_some())
                    .then(|| regenerate(s.seed, 1, shared_noise)),
            });
        }
        record.write(&out, shard)?;
        all.extend(objects.into_iter().flatten());
    }
    progress.finish();
    let sidecar = shard.file_name(sidecar::FILE);
    if sharded {
        record.write(&out, shard)?;
        eprintln!(
            "{} images and {sidecar} written to {dir}; when every shard has run: dream3d collect {dir}",
            all.len(),
            dir = out.display()
        );
        return Ok(());
    }
    let columns = if multiview {
        views
    } else {
        square_columns(all.len())
    };
    save_png(&out.join(GRID), &contact_sheet(&all, columns))?;
    eprintln!(
        "{} images, {GRID} and {sidecar} written to {}",
        all.len(),
        out.display()
    );
    Ok(())
}

/// The named distribution(s), `--prompt`, or the latest fitted distribution.
fn resolve_source(args: &SampleArgs) -> anyhow::Result<Source> {
    if let Some(p) = &args.prompt {
        return Ok(Source::Prompt(p.clone()));
    }
    let specs = if !args.mix.is_empty() {
        args.mix.clone()
    } else {
        let path = conditioning::chosen_distribution(args.distribution.as_deref())?;
        eprintln!("prompt distribution: {}", path.display());
        vec![MixSpec {
            path,
            weight: 1.0,
            gamma: None,
        }]
    };
    Ok(Source::distributions(specs, args.gamma)?)
}

/// Copies the distributions beside the images, so the sidecar's commands still reproduce
/// them after `latest.dist.safetensors` has been replaced by a newer fit.
fn keep_distributions(source: &Source, out: &Path) -> anyhow::Result<Vec<MixRecord>> {
    let Source::Distributions(members) = source else {
        return Ok(vec![]);
    };
    members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let copy = std::path::absolute(out.join(format!("conditioning-{i}.dist.safetensors")))?;
            let bytes =
                std::fs::read(&m.path).with_context(|| format!("reading {}", m.path.display()))?;
            dream3d::files::write_atomic(&copy, &bytes)?;
            Ok(MixRecord {
                path: copy.to_string_lossy().into_owned(),
                weight: m.weight,
                gamma: m.gamma,
            })
        })
        .collect()
}

/// A bar over all DDIM steps of all images on a terminal; quiet otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    images: usize,
    steps: usize,
}

impl Progress {
    fn new(images: usize, steps: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new((images * steps) as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} image {msg} [{elapsed_precise} < {eta_precise}]",
                )
                .expect("valid template"),
            );
            bar
        });
        Self { bar, images, steps }
    }

    /// One DDIM step of a batch of `images`.
    fn step(&self, images: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(images as u64);
            let current = (bar.position() as usize / self.steps).min(self.images - 1) + 1;
            bar.set_message(format!("{current}/{}", self.images));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
