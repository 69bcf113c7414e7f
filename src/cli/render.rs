//! `dream3d render --turntable`: a turntable of a field (volume rendered) or of an exported
//! mesh (rasterised) as frames and an animated GIF.

use anyhow::{bail, Context};
use clap::Args;
use dream3d::gpu::mesh_preview::MeshPreview;
use dream3d::gpu::{GpuContext, GpuField};
use dream3d::imaging::save_png;
use dream3d::turntable::Turntable;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct RenderArgs {
    /// A .glb/.gltf mesh, a field checkpoint, or a run directory holding field.safetensors.
    input: PathBuf,
    /// Render views orbiting the object (the only mode so far).
    #[arg(long)]
    turntable: bool,
    /// Output folder for the frames and turntable.gif.
    #[arg(short, long, default_value = "turntable")]
    output: PathBuf,
    #[arg(long, default_value_t = 120)]
    frames: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Frame size in pixels.
    #[arg(long, default_value_t = 512)]
    size: u32,
    /// Camera elevation in degrees.
    #[arg(long, default_value_t = 15.0)]
    elevation: f64,
}

pub fn run(args: RenderArgs) -> anyhow::Result<()> {
    if !args.turntable {
        bail!("say what to render: --turntable");
    }
    dream3d::files::ensure_writable_dir(&args.output)?;
    let ctx = Arc::new(GpuContext::new()?);
    let turntable = Turntable {
        frames: args.frames,
        fps: args.fps,
        size: args.size,
        elevation: args.elevation,
        ..Turntable::default()
    };
    let progress = |i| eprint!("\rframe {}/{}", i + 1, args.frames);
    let is_mesh = matches!(
        args.input.extension().and_then(|e| e.to_str()),
        Some("glb" | "gltf")
    );
    let frames = if is_mesh {
        let parts = dream3d::mesh::load::read_asset(&args.input)?;
        let preview = MeshPreview::new(ctx, &parts)?;
        turntable.render(|camera| preview.render(camera, args.size), progress)?
    } else {
        let checkpoint = if args.input.is_dir() {
            args.input.join(super::export::FIELD_FILE)
        } else {
            args.input.clone()
        };
        let mut field = GpuField::load(ctx, &checkpoint)
            .with_context(|| format!("reading the field from {}", checkpoint.display()))?;
        turntable.render(|camera| turntable.field_view(&mut field, camera), progress)?
    };
    eprintln!();
    for (i, frame) in frames.iter().enumerate() {
        save_png(&args.output.join(format!("frame_{i:04}.png")), frame)?;
    }
    let gif = args.output.join("turntable.gif");
    turntable.write_gif(&gif, &frames)?;
    eprintln!("{} frames and {} written", frames.len(), gif.display());
    Ok(())
}
