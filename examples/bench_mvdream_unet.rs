//! One MVDream UNet forward at the real size (random weights): 8 images = 4 views ×
//! (unconditional, conditional), 32×32 latents, self-attention joint over each object's 4 views
//! and cameras added to the time embedding; and the same UNet in plain 2-D mode at the same
//! shapes (what diffusers' UNet computes; `benches/mvdream_unet.sh` times that in PyTorch).
//!
//!     cargo run --release --example bench_mvdream_unet -- --json bench-out/dream3d_mv_unet.json

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use dream3d::camera::mvdream_cameras;
use dream3d::models::unet::Views;
use dream3d::models::UNet2DConditionModel;
use dream3d::mvdream::MvUNetParams;
use dream3d::weights::Weights;
use std::path::Path;
use std::time::Instant;

mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| common::arg(&args, flag);
    let reps: usize = value("--reps").map_or(Ok(3), |r| r.parse())?;
    let out = value("--json").ok_or_else(|| {
        anyhow::anyhow!("usage: bench_mvdream_unet --json OUT.json [--reps N] [--mode mv|2d]")
    })?;
    let multiview = value("--mode").as_deref() != Some("2d");

    let dev = Device::cuda_if_available(0)?;
    let dtype = if dev.is_cpu() { DType::F32 } else { DType::F16 };
    let (config, layout) = MvUNetParams::default().unet_config(Path::new("sd-v2-base.yaml"))?;
    let unet = UNet2DConditionModel::load(config, layout, &Weights::random(0, dtype, &dev))?;
    let latents = Tensor::randn(0f32, 1.0, (8, 4, 32, 32), &dev)?.to_dtype(dtype)?;
    let context = Tensor::randn(0f32, 1.0, (8, 77, 1024), &dev)?.to_dtype(dtype)?;
    let cameras: Vec<f32> = mvdream_cameras(4, 15.0, 90.0, 360.0, true)
        .iter()
        .flatten()
        .map(|&v| v as f32)
        .collect();
    let camera = Tensor::from_vec(cameras, (4, 16), &dev)?.repeat((2, 1))?;
    let views = if multiview {
        Views {
            camera: Some(&camera),
            frames: 4,
        }
    } else {
        Views::default()
    };
    let timesteps = [501.0; 8];
    let run = || -> Result<()> {
        unet.forward_views(&latents, &timesteps, &context, views)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()?;
        Ok(())
    };
    run()?; // warm-up
    let mut times = vec![];
    for _ in 0..reps {
        let start = Instant::now();
        run()?;
        times.push(start.elapsed().as_secs_f64());
    }
    let key = if multiview {
        "mv_unet_fwd_b8"
    } else {
        "unet_fwd_b8"
    };
    let result = serde_json::json!({ key: common::summary(&times)? });
    std::fs::write(&out, serde_json::to_string_pretty(&result)?)?;
    eprintln!("{key}: {:?}", times);
    Ok(())
}
