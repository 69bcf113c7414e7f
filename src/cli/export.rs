//! `dream3d export`: a field checkpoint to a coloured glTF 2.0 binary that opens in any
//! viewer.

use anyhow::{bail, Context};
use clap::Args;
use dream3d::gpu::{GpuContext, GpuField};
use dream3d::mesh::export::{export_glb, Albedo, ExportSettings};
use std::path::PathBuf;
use std::sync::Arc;

pub use dream3d::distill::run::FIELD_FILE;

#[derive(Args)]
pub struct ExportArgs {
    /// A field checkpoint, or a run directory holding field.safetensors.
    input: PathBuf,
    /// Output .glb.
    #[arg(short, long, default_value = "out.glb")]
    output: PathBuf,
    /// Grid points per side for the isosurface.
    #[arg(long, default_value_t = 256)]
    resolution: u32,
    /// Density of the surface (threestudio's 25).
    #[arg(long, default_value_t = 25.0)]
    threshold: f32,
    /// Write geometry only, without albedo.
    #[arg(long, conflicts_with = "texture")]
    no_color: bool,
    /// Bake the albedo into an N×N texture over a UV atlas instead of per-vertex colours.
    #[arg(long, value_name = "N")]
    texture: Option<u32>,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let checkpoint = if args.input.is_dir() {
        args.input.join(FIELD_FILE)
    } else {
        args.input.clone()
    };
    if args.output.exists() && !args.force {
        bail!(
            "{} exists: pass --force to replace it",
            args.output.display()
        );
    }
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        dream3d::files::ensure_writable_dir(dir)?;
    }
    let ctx = Arc::new(GpuContext::new()?);
    eprintln!("GPU: {}", ctx.describe());
    let field = GpuField::load(ctx, &checkpoint)
        .with_context(|| format!("reading the field from {}", checkpoint.display()))?;
    let settings = ExportSettings {
        resolution: args.resolution,
        threshold: args.threshold,
        albedo: match (args.texture, args.no_color) {
            (Some(side), _) => Albedo::Texture(side),
            (None, true) => Albedo::None,
            (None, false) => Albedo::Vertex,
        },
        ..ExportSettings::default()
    };
    let metadata = serde_json::json!({
        "source": checkpoint.display().to_string(),
        "step": field.step,
    });
    let written = export_glb(&field, &settings, &args.output, metadata)?;
    eprintln!(
        "{} vertices, {} triangles written to {}",
        written.positions.len(),
        written.triangles.len(),
        args.output.display()
    );
    Ok(())
}
