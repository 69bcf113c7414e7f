//! One DreamDistribution fit step at the SD 2.1-base size (random weights): K = 32 prompts of
//! L = 4 tokens through the 23-layer text encoder, μ/σ over K, M = 4 conditionings for one
//! 256 px image (1×4×32×32 latents; the frozen VAE's latents are cached in a real fit), UNet
//! forward and backward to the prompts, gradient clipping and AdamW. The same step as
//! `benches/torch_fit_step.py`; `benches/fit_step.sh` runs both.
//!
//!     cargo run --release --example bench_fit_step -- --json bench-out/dream3d_fit_step.json

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use dream3d::diffusion::NoiseSchedule;
use dream3d::models::{ClipTextConfig, ClipTextModel, UNet2DConditionModel, UNetConfig};
use dream3d::optim::{clip_grad_norm, AdamW, AdamWConfig};
use dream3d::prompt::learner::{
    self, diffusion_loss, encode_with, gaussian, orthogonality_loss, reparameterize,
};
use dream3d::prompt::{Frame, PositionMode, Template};
use dream3d::tokenizer::ClipTokenizer;
use dream3d::weights::Weights;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;

mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const K: usize = 32;
const L: usize = 4;
const M: usize = 4;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| common::arg(&args, flag);
    // `--no-checkpointing` keeps every text-encoder activation (faster, ~6 GB more).
    let checkpointing = !args.iter().any(|a| a == "--no-checkpointing");
    let reps: usize = value("--reps").map_or(Ok(3), |r| r.parse())?;
    let out = value("--json")
        .ok_or_else(|| anyhow::anyhow!("usage: bench_fit_step --json OUT.json [--reps N]"))?;

    let dev = Device::Cpu;
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/configs/sd21-base");
    let text_path = configs.join("text_encoder.json");
    let text = ClipTextModel::load(
        ClipTextConfig::load(&text_path)?,
        &text_path,
        &Weights::random(0, DType::F32, &dev),
    )?;
    let (uc, ul) = UNetConfig::load(&configs.join("unet.json"))?;
    let unet = UNet2DConditionModel::load(uc, ul, &Weights::random(1, DType::F32, &dev))?;
    let schedule =
        NoiseSchedule::from_config(&serde_json::from_str("{}")?, Path::new("<defaults>"))?;
    let tokenizer = ClipTokenizer::bundled()?;
    let frame = Frame::new(
        &text,
        &tokenizer,
        &Template::default(),
        L,
        PositionMode::Official,
    )?;
    let soft = learner::init_soft_prompts(K, L, 1024, 0, DType::F32, &dev)?;
    let mut opt = AdamW::new(AdamWConfig::default(), soft.as_tensor())?;

    // One cached image latent, as in a fit; a fresh timestep and noises every step.
    let x0 = Tensor::randn(0f32, 1., (1, 4, 32, 32), &dev)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut step = |opt: &mut AdamW| -> Result<()> {
        let t = rng.random_range(0..1000);
        let noise = Tensor::randn(0f32, 1., (1, 4, 32, 32), &dev)?;
        let eps = Tensor::randn(0f32, 1., (M, 77, 1024), &dev)?;
        let enc = encode_with(&text, &frame, soft.as_tensor(), checkpointing)?;
        let (mu, sigma) = gaussian(&enc.hidden)?;
        let cond = reparameterize(&mu, &sigma, &eps)?;
        let diff = diffusion_loss(&unet, &schedule, &x0, &noise, &[t], &cond, 5.0)?;
        let loss = (diff + (orthogonality_loss(&enc.pooled)? * 1e-3)?)?;
        let grads = loss.backward()?;
        let (grad, _) = clip_grad_norm(grads.get(soft.as_tensor()).expect("prompt gradient"), 1.0)?;
        opt.step(&soft, &grad)?;
        Ok(())
    };
    step(&mut opt)?; // warm-up
    let mut times = vec![];
    for _ in 0..reps {
        let began = Instant::now();
        step(&mut opt)?;
        times.push(began.elapsed().as_secs_f64());
    }
    let result = common::summary(&times)?;
    eprintln!(
        "fit_step median {:.2} s, peak {:.2} GB",
        result["median_s"],
        result["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1e9
    );
    std::fs::write(
        out,
        serde_json::to_string_pretty(&serde_json::json!({ "fit_step": result }))?,
    )?;
    Ok(())
}
