//! `dream3d collect`: after the shards of a `sample` or `generate` have run, one summary of
//! their manifests with every output checked again, and the command that redoes each item that
//! is missing or broken.

use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct CollectArgs {
    /// The folder the shards shared (sample's -o, generate's --run-dir).
    dir: PathBuf,
}

pub fn run(args: CollectArgs) -> anyhow::Result<()> {
    let collected = dream3d::manifest::collect(&args.dir)?;
    collected.save(&args.dir)?;
    println!(
        "{} of {} items made and valid in {}",
        collected.valid.len(),
        collected.total,
        args.dir.display()
    );
    for m in &collected.missing {
        println!("item {}: {}\n  redo: {}", m.item, m.reason, m.command);
    }
    anyhow::ensure!(
        collected.missing.is_empty(),
        "{} of {} items missing or broken (the commands above redo them)",
        collected.missing.len(),
        collected.total
    );
    Ok(())
}
