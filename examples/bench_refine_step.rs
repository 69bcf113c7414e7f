//! Time per step of `generate`'s mesh stage, split by part, at the real sizes with random
//! weights (MVDream's UNet and SD's VAE as `bench_generate_step`): a DMTet grid of
//! threestudio's 128 cells started from the full-size field's initial blob (its surface at
//! density 5: the blob never reaches threestudio's 25), 4 views at 256²; geometry steps (normal
//! maps, regularisers, marching tetrahedra's backward, Adam on 8.6 M values) then texture steps
//! (the field's albedo at the surface points, AdamW on the field). Then the refined surface's
//! exports: triangles and file size with vertex colours and with a 1024² texture.
//!
//!     cargo run --release --example bench_refine_step -- [--steps 1] [--resolution 128]
//!         [--json OUT.json] [--f32]

use anyhow::Result;
use candle_core::Device;
use dream3d::distill::refine::{RefineReport, RefineSettings, Refiner, SurfaceState};
use dream3d::distill::run::GenerateConfig;
use dream3d::field::FieldConfig;
use dream3d::gpu::surface::SurfaceRenderer;
use dream3d::gpu::{GpuContext, GpuField};
use dream3d::mesh::export::{export_mesh_glb, Albedo};
use std::sync::Arc;
use std::time::Instant;

mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps: u64 = common::arg(&args, "--steps").map_or(Ok(1), |s| s.parse())?;
    let resolution: u32 = common::arg(&args, "--resolution").map_or(Ok(128), |s| s.parse())?;
    let dev = Device::cuda_if_available(0)?;
    let dtype = common::network_dtype(&args, &dev);
    let networks = common::RandomMvdream::new(dtype, &dev)?;
    let guidance = networks.guidance();
    let encoder = networks.encoder();
    let ctx = Arc::new(GpuContext::new()?);
    let field_config = FieldConfig::default();
    let mut field = GpuField::new(
        ctx.clone(),
        field_config.clone(),
        &field_config.init_params(0),
    )?;
    let config = GenerateConfig {
        refine: RefineSettings {
            resolution,
            threshold: 5.0,
            ..RefineSettings::default()
        },
        ..GenerateConfig::default()
    };
    let start = Instant::now();
    let mut state = SurfaceState::from_field(&field, resolution, config.refine.threshold)?;
    let setup = start.elapsed().as_secs_f64();
    let mut refiner = Refiner {
        config: &config,
        guidance: &guidance,
        encoder: &encoder,
        renderer: SurfaceRenderer::new(ctx.clone())?,
    };
    let mut reports: Vec<RefineReport> = vec![];
    for i in 0..steps {
        let report = refiner.geometry_step(&mut state, config.distill.steps + i)?;
        eprintln!("{}", serde_json::to_string(&report)?);
        reports.push(report);
    }
    let surface = state.surface();
    for i in 0..steps {
        let step = config.distill.steps + steps + i;
        let report = refiner.texture_step(&surface, &mut field, step)?;
        eprintln!("{}", serde_json::to_string(&report)?);
        reports.push(report);
    }
    println!(
        "candle on {dev:?} ({dtype:?}), rasteriser and field on {}; grid {resolution}³ set up from the field in {setup:.2} s",
        ctx.describe()
    );
    println!("| phase | vertices / triangles | extract + render | VAE encode | UNet ×2 (guidance) | VAE backward | render backward | optimizer | total |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &reports {
        let s = &r.seconds;
        let total =
            s.render + s.encode + s.guidance + s.encode_backward + s.render_backward + s.optimizer;
        println!(
            "| {:?} | {} / {} | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s |",
            r.phase,
            r.vertices,
            r.triangles,
            s.render,
            s.encode,
            s.guidance,
            s.encode_backward,
            s.render_backward,
            s.optimizer,
            total
        );
    }
    let dir = tempfile::tempdir()?;
    println!("| export | triangles | file |");
    println!("|---|---|---|");
    for (name, albedo) in [
        ("vertex colours", Albedo::Vertex),
        ("1024² texture", Albedo::Texture(1024)),
    ] {
        let path = dir.path().join("refined.glb");
        let start = Instant::now();
        let mesh = export_mesh_glb(
            &field,
            surface.export_mesh(0.01),
            albedo,
            &path,
            serde_json::json!({}),
        )?;
        println!(
            "| {name} | {} | {:.1} MB ({:.2} s) |",
            mesh.triangles.len(),
            std::fs::metadata(&path)?.len() as f64 / 1e6,
            start.elapsed().as_secs_f64()
        );
    }
    if let Some(out) = common::arg(&args, "--json") {
        std::fs::write(out, serde_json::to_string_pretty(&reports)?)?;
    }
    Ok(())
}
