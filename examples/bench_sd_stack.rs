//! Real-size (SD 2.1-base, random weights) timings of the differentiable model stack, the
//! workloads of `benches/torch_reference.py`, each in its own process so that its peak memory is
//! its own. `--stock` keeps every weight as a `Var`, so candle computes and stores a gradient
//! for each one, as its stock modules do: the cost our frozen-weight ops remove.
//!
//!     cargo run --release --example bench_sd_stack -- --json bench-out/dream3d.json [--stock]
//!
//! `benches/sd_stack.sh` runs this and the PyTorch reference in one go and prints the table.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use dream3d::models::{
    AutoencoderKL, ClipTextConfig, ClipTextModel, UNet2DConditionModel, UNetConfig, VaeConfig,
};
use dream3d::weights::Weights;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod common;

const WORKLOADS: [&str; 4] = ["unet_fwd", "unet_fwd_bwd", "clip_fwd", "vae_enc_fwd_bwd"];

fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/configs/sd21-base")
        .join(name)
}

fn weights(stock: bool) -> Weights {
    if stock {
        Weights::random_vars(0, DType::F32, &Device::Cpu)
    } else {
        Weights::random(0, DType::F32, &Device::Cpu)
    }
}

fn randn(shape: &[usize]) -> Result<Tensor> {
    Ok(Tensor::randn(0f32, 1f32, shape, &Device::Cpu)?)
}

fn unet(stock: bool) -> Result<UNet2DConditionModel> {
    let (c, l) = UNetConfig::load(&config("unet.json"))?;
    Ok(UNet2DConditionModel::load(c, l, &weights(stock))?)
}

/// Builds the workload's model and inputs; returns one timed step.
fn setup(name: &str, stock: bool) -> Result<Box<dyn Fn() -> Result<()>>> {
    Ok(match name {
        "unet_fwd" => {
            let unet = unet(stock)?;
            let (x, ctx) = (randn(&[2, 4, 32, 32])?, randn(&[2, 77, 1024])?);
            Box::new(move || {
                unet.forward(&x, &[751.0, 1.0], &ctx)?;
                Ok(())
            })
        }
        "unet_fwd_bwd" => {
            let unet = unet(stock)?;
            let (x, ctx) = (
                randn(&[1, 4, 32, 32])?,
                Var::from_tensor(&randn(&[1, 77, 1024])?)?,
            );
            Box::new(move || {
                let loss = unet
                    .forward(&x, &[751.0], ctx.as_tensor())?
                    .sqr()?
                    .mean_all()?;
                let grads = loss.backward()?;
                anyhow::ensure!(grads.get(ctx.as_tensor()).is_some());
                Ok(())
            })
        }
        "clip_fwd" => {
            let path = config("text_encoder.json");
            let model = ClipTextModel::load(ClipTextConfig::load(&path)?, &path, &weights(stock))?;
            let ids = Tensor::rand(0f32, 49408f32, (8, 77), &Device::Cpu)?.to_dtype(DType::U32)?;
            Box::new(move || {
                model.forward(&ids)?;
                Ok(())
            })
        }
        "vae_enc_fwd_bwd" => {
            let vae = AutoencoderKL::load(VaeConfig::load(&config("vae.json"))?, &weights(stock))?;
            let image = Var::from_tensor(&randn(&[4, 3, 256, 256])?)?;
            Box::new(move || {
                let loss = vae.encode(image.as_tensor())?.mean.sqr()?.mean_all()?;
                let grads = loss.backward()?;
                anyhow::ensure!(grads.get(image.as_tensor()).is_some());
                Ok(())
            })
        }
        other => anyhow::bail!("unknown workload {other}; one of {WORKLOADS:?}"),
    })
}

fn run_child(name: &str, reps: usize, stock: bool) -> Result<serde_json::Value> {
    let step = setup(name, stock)?;
    step()?; // warm-up
    let mut times = vec![];
    for _ in 0..reps {
        let start = Instant::now();
        step()?;
        times.push(start.elapsed().as_secs_f64());
    }
    common::summary(&times)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| common::arg(&args, flag);
    let stock = args.iter().any(|a| a == "--stock");
    let reps: usize = value("--reps").map_or(Ok(3), |r| r.parse())?;
    if let Some(name) = value("--child") {
        println!("{}", run_child(&name, reps, stock)?);
        return Ok(());
    }
    let out = value("--json").ok_or_else(|| {
        anyhow::anyhow!(
            "usage: bench_sd_stack --json OUT.json [--reps N] [--only NAME,…] [--stock]"
        )
    })?;
    let only = value("--only");
    let mut results = serde_json::Map::new();
    for name in WORKLOADS
        .iter()
        .filter(|w| only.as_ref().is_none_or(|o| o.split(',').any(|x| x == **w)))
    {
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.args(["--child", name, "--reps", &reps.to_string()]);
        if stock {
            cmd.arg("--stock");
        }
        let output = cmd.output()?;
        anyhow::ensure!(
            output.status.success(),
            "{name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let result: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        eprintln!(
            "{name:<16} median {:>7.2} s   peak {:>5.2} GB",
            result["median_s"].as_f64().unwrap_or(0.0),
            result["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1e9
        );
        results.insert(name.to_string(), result);
    }
    if let Some(dir) = Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&results)?)?;
    Ok(())
}

/// The allocator the `dream3d` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
