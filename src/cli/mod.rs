//! The `dream3d` command line: one file per subcommand; each parses its options, calls the
//! library and reports.

mod collect;
mod convert;
mod export;
mod fit;
mod generate;
mod import;
mod info;
mod progress;
mod render;
mod sample;

use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "dream3d",
    version,
    about = "Prompt distributions from reference images, to 2D images and 3D assets"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Learn a prompt distribution from reference images (DreamDistribution).
    Fit(Box<fit::FitArgs>),
    /// Write an official MVDream checkpoint (.pt) as safetensors, checked against its architecture.
    Convert(convert::ConvertArgs),
    /// Make 3D assets: MVDream distilled into a field from a prompt distribution, as glTF.
    Generate(Box<generate::GenerateArgs>),
    /// Extract a field's surface as a coloured glTF 2.0 binary (.glb).
    Export(export::ExportArgs),
    /// Convert official DreamDistribution outputs (.pt context, .npz moments) to a distribution file.
    Import(import::ImportArgs),
    /// Render a field or a mesh: a turntable of frames and an animated GIF.
    Render(render::RenderArgs),
    /// Draw images from a prompt distribution (or a plain prompt) with Stable Diffusion.
    Sample(Box<sample::SampleArgs>),
    /// Show where each component of a model was found, its architecture and parameter counts.
    Info(info::InfoArgs),
    /// Merge the manifests of a sharded sample or generate, check every output, and print the
    /// command that redoes each missing or broken item.
    Collect(collect::CollectArgs),
}

impl Cli {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Collect(args) => collect::run(args),
            Command::Convert(args) => convert::run(args),
            Command::Export(args) => export::run(args),
            Command::Fit(args) => fit::run(*args),
            Command::Generate(args) => generate::run(*args),
            Command::Import(args) => import::run(args),
            Command::Info(args) => info::run(args),
            Command::Render(args) => render::run(args),
            Command::Sample(args) => sample::run(*args),
        }
    }
}

/// The hub revision models are looked up at unless `--revision` says otherwise.
pub const DEFAULT_REVISION: &str = "main";

/// How to find the Stable Diffusion model (shared by every subcommand that loads one).
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A diffusers folder, or a Hugging Face repo id looked up in the HF cache
    /// [info: stabilityai/stable-diffusion-2-1-base; fit: stabilityai/stable-diffusion-2-1;
    /// sample: the distribution's own model].
    #[arg(long)]
    pub model: Option<String>,
    /// Hub revision (branch, tag or commit).
    #[arg(long, default_value = DEFAULT_REVISION)]
    pub revision: String,
    /// Never download (also set by HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Prefer the fp16 weight files (half the download; upcast on the CPU).
    #[arg(long)]
    pub fp16: bool,
}

impl ModelArgs {
    /// The commit `--revision` stands for in the HF cache when `model` is a hub id held there
    /// (a branch moves on; the commit keeps a recorded command on the same files).
    pub fn pinned_revision(&self, model: &str) -> Option<String> {
        if Path::new(model).exists() {
            return None;
        }
        let lookup = self.lookup();
        let snapshot = dream3d::weights::hub::snapshot_dir(&lookup.cache, model, &self.revision)?;
        Some(snapshot.file_name()?.to_string_lossy().into_owned())
    }

    pub fn lookup(&self) -> dream3d::weights::Lookup {
        let default = dream3d::weights::Lookup::default();
        dream3d::weights::Lookup {
            revision: self.revision.clone(),
            offline: self.offline || default.offline,
            prefer_fp16: self.fp16,
            ..default
        }
    }
}

/// `base`, or `base-2`, `base-3`… : the first folder that holds none of `markers` yet.
fn first_unused(base: &Path, markers: &[&str]) -> PathBuf {
    (1..)
        .map(|i| match i {
            1 => base.to_path_buf(),
            _ => PathBuf::from(format!("{}-{i}", base.display())),
        })
        .find(|p| markers.iter().all(|m| !p.join(m).exists()))
        .expect("an unused folder")
}

/// This process's shard of a command's `items` (`what`, for messages), from `--shard`,
/// `--shards` or the scheduler, and whether it runs sharded: by flag or scheduler, even as the
/// one shard of 1 (what `collect` redoes a whole run with), it shares its output folder and
/// skips what is made there. None: the shard has no items, which it says.
pub fn shard_of(
    flag: Option<&str>,
    shards: Option<u32>,
    items: usize,
    what: &str,
) -> anyhow::Result<Option<(dream3d::shard::Shard, bool)>> {
    use dream3d::shard::{Shard, ShardSource};
    let (shard, source) = Shard::detect(flag, shards, |k| std::env::var(k).ok())?;
    let sharded = source != ShardSource::Whole;
    if sharded {
        if shard.index as usize >= items {
            eprintln!("shard {shard} has none of the {items} {what}: nothing to do");
            return Ok(None);
        }
        eprintln!("{}", source.describe(shard));
    }
    Ok(Some((shard, sharded)))
}

/// A command line from arguments, quoted for POSIX shells where needed.
pub fn shell_command(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=+,@".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What every shard of a job runs: this process's command line without its shard flags, run
/// from this folder.
pub fn job_command() -> anyhow::Result<String> {
    let mut args: Vec<String> = vec!["dream3d".into()];
    let mut rest = std::env::args().skip(1);
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--shard" | "--shards" => {
                rest.next();
            }
            _ if a.starts_with("--shard=") || a.starts_with("--shards=") => {}
            _ => args.push(a),
        }
    }
    let here = std::env::current_dir()?;
    Ok(format!(
        "cd {} && {}",
        shell_command(&[here.display().to_string()]),
        shell_command(&args)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        let args = ["dream3d", "--edit", "it's * made of gold", "--negative", ""].map(String::from);
        assert_eq!(
            shell_command(&args),
            r"dream3d --edit 'it'\''s * made of gold' --negative ''"
        );
    }
}
