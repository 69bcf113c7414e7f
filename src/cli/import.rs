//! `dream3d import`: official DreamDistribution outputs into a dream3d distribution file.

use anyhow::Context;
use clap::Args;
use dream3d::prompt::import::import_official;
use dream3d::prompt::Template;
use dream3d::stable_diffusion::StableDiffusion;
use std::path::PathBuf;

#[derive(Args)]
pub struct ImportArgs {
    /// The official checkpoint with the learned context (`prompt_learner.pt`, `final-N.pt`).
    ctx: PathBuf,
    /// The official `final-N.npz` with `means` and `stds` (else they are computed from the context).
    #[arg(long)]
    npz: Option<PathBuf>,
    /// Where to write the distribution.
    #[arg(short, long)]
    output: PathBuf,
    /// Training-time words before the learned tokens (the official `--customize_prefix`).
    #[arg(long, default_value = "")]
    prefix: String,
    /// Training-time words after them (`--customize_suffix`).
    #[arg(long, default_value = "")]
    suffix: String,
    #[command(flatten)]
    model: super::ModelArgs,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let name = args
        .model
        .model
        .as_deref()
        .unwrap_or("stabilityai/stable-diffusion-2-1");
    let files = args.model.lookup().resolve(name)?;
    let device = dream3d::device::best_device()?;
    let sd = StableDiffusion::load(files, dream3d::device::default_dtype(&device), &device)
        .with_context(|| format!("loading model `{name}`"))?;
    let template = Template {
        prefix: args.prefix,
        suffix: args.suffix,
    };
    let dist = import_official(&args.ctx, args.npz.as_deref(), &sd, &template)?;
    dist.save(&args.output)?;
    eprintln!(
        "imported {} prompts × {} tokens into {}",
        dist.meta.prompts,
        dist.meta.tokens_per_prompt,
        args.output.display()
    );
    Ok(())
}
