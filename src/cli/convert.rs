//! `dream3d convert`: the official MVDream checkpoint (a PyTorch pickle) as safetensors, which
//! loads without unpickling and can be memory-mapped. The copy is checked first: every tensor
//! must have its place in the architecture.

use anyhow::{bail, Context};
use clap::Args;
use dream3d::mvdream::checkpoint::read_state_dict;
use dream3d::mvdream::{MvdreamArchitecture, MvdreamModel};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Args)]
pub struct ConvertArgs {
    /// MVDream checkpoint (.pt, .ckpt or .safetensors).
    checkpoint: PathBuf,
    /// Output file [the checkpoint's name with .safetensors].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Architecture in the official YAML format [the checkpoint's stem + .yaml, else
    /// sd-v2-base.yaml's].
    #[arg(long, value_name = "FILE.yaml")]
    mvdream_config: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| args.checkpoint.with_extension("safetensors"));
    if out == args.checkpoint {
        bail!("{} is already safetensors: give another -o", out.display());
    }
    if out.exists() && !args.force {
        bail!("{} exists: pass --force to replace it", out.display());
    }
    let (arch, _) =
        MvdreamArchitecture::for_checkpoint(&args.checkpoint, args.mvdream_config.as_deref())?;
    let tensors = read_state_dict(&args.checkpoint)?;
    let count = tensors.len();
    // Builds the networks once: every name and shape is checked (the tensors are shared, not
    // copied).
    MvdreamModel::from_state_dict(
        tensors.clone(),
        &arch,
        &args.checkpoint,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .with_context(|| {
        format!(
            "{} is not an MVDream checkpoint of this architecture",
            args.checkpoint.display()
        )
    })?;
    let named: Vec<(&str, &candle_core::Tensor)> =
        tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let source = args
        .checkpoint
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    dream3d::weights::save_atomic(
        &out,
        &named,
        HashMap::from([
            ("converted_from".to_string(), source),
            (
                "dream3d_version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ]),
    )?;
    eprintln!("{count} tensors written to {}", out.display());
    Ok(())
}
