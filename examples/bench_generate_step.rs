//! Time per `generate` step, split by stage, at the real sizes with random weights: MVDream's
//! UNet (sd-v2-base, 4-view), SD's VAE, the full field (16 levels, 2¹⁹ entries, solid
//! background), 512 samples per ray; one step of the 64² stage (8 views, upsampled to 256² for the VAE) and one of the
//! 256² stage (4 views). The guidance's UNet runs twice per view (with and without the prompt)
//! in one batch.
//!
//!     cargo run --release --example bench_generate_step -- [--steps 1] [--stage 64|256]
//!         [--background solid|neural|augmented] [--json OUT.json] [--f32]

use anyhow::Result;
use candle_core::Device;
use dream3d::distill::step::{DistillSettings, Distiller, StepReport};
use dream3d::gpu::{GpuContext, GpuField};
use std::sync::Arc;

mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps: u64 = common::arg(&args, "--steps").map_or(Ok(1), |s| s.parse())?;
    let dev = Device::cuda_if_available(0)?;
    let dtype = common::network_dtype(&args, &dev);
    let networks = common::RandomMvdream::new(dtype, &dev)?;
    let guidance = networks.guidance();
    let encoder = networks.encoder();
    let ctx = Arc::new(GpuContext::new()?);
    // `--background solid` (default here), `neural` or `augmented` (generate's default: the
    // neural environment map, replaced by a random colour half of the time). With these random
    // full-size weights `augmented` gave a non-finite pixel gradient at step 0 (open question,
    // see BENCHMARKS.md); the background's share of the time is negligible.
    let defaults = DistillSettings::default();
    let settings = match common::arg(&args, "--background").as_deref() {
        Some("augmented") => defaults,
        Some("neural") => DistillSettings {
            background_augmentation: 0.0,
            ..defaults
        },
        _ => DistillSettings {
            background_augmentation: 0.0,
            field: dream3d::field::FieldConfig::default(),
            ..defaults
        },
    };
    let field = GpuField::new(
        ctx.clone(),
        settings.field.clone(),
        &settings.field.init_params(0),
    )?;
    let mut distiller = Distiller { field, settings };
    let mut reports: Vec<StepReport> = vec![];
    let first_of_256 = distiller.settings.stages.milestones[0];
    let starts = match common::arg(&args, "--stage").as_deref() {
        Some("64") => vec![0],
        Some("256") => vec![first_of_256],
        _ => vec![0, first_of_256],
    };
    for start in starts {
        for step in start..start + steps {
            let report = distiller.step(step, &guidance, &encoder)?;
            eprintln!("{}", serde_json::to_string(&report)?);
            reports.push(report);
        }
    }
    println!("candle on {dev:?} ({dtype:?}), field on {}", ctx.describe());
    println!("| stage | views × size | render | VAE encode | UNet ×2 (guidance) | VAE backward | render backward | AdamW + occupancy | total |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &reports {
        let s = &r.seconds;
        let total =
            s.render + s.encode + s.guidance + s.encode_backward + s.render_backward + s.optimizer;
        println!(
            "| step {} | {} × {}² | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s |",
            r.step,
            distiller.settings.stages.batch(r.step),
            r.size,
            s.render,
            s.encode,
            s.guidance,
            s.encode_backward,
            s.render_backward,
            s.optimizer,
            total
        );
    }
    if let Some(out) = common::arg(&args, "--json") {
        std::fs::write(out, serde_json::to_string_pretty(&reports)?)?;
    }
    Ok(())
}
