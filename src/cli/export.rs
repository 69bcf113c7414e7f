//! `dream3d export`: a field checkpoint to a coloured glTF 2.0 binary that opens in any
//! viewer.

use anyhow::{bail, Context};
use clap::Args;
use dream3d::gpu::{GpuContext, GpuField};
use dream3d::mesh::export::{extract, ExportSettings};
use dream3d::mesh::gltf::{write_glb, GlbContents};
use std::path::PathBuf;
use std::sync::Arc;

/// The field checkpoint's name inside a run directory.
pub const FIELD_FILE: &str = "field.safetensors";

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
    /// Write geometry only, without per-vertex albedo.
    #[arg(long)]
    no_color: bool,
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
        ..ExportSettings::default()
    };
    let (mesh, colors) = extract(&field, &settings)?;
    let metadata = serde_json::json!({
        "source": checkpoint.display().to_string(),
        "step": field.step,
        "export": settings,
        "field": field.config,
    });
    write_glb(
        &args.output,
        &GlbContents {
            mesh: &mesh,
            colors: (!args.no_color).then_some(colors.as_slice()),
            metadata,
        },
    )?;
    eprintln!(
        "{} vertices, {} triangles written to {}",
        mesh.positions.len(),
        mesh.triangles.len(),
        args.output.display()
    );
    Ok(())
}
