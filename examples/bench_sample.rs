//! One text-to-image sample (DDIM with CFG 7.5, batch 1, VAE decode to 8-bit RGB) through
//! dream3d's sampling pipeline, timed per image after the model has loaded. The model folder
//! is the random-weight SD 2.1-base written by `benches/torch_sample.py --make`, so PyTorch and
//! dream3d run the same weights; `benches/sample.sh` runs both.
//!
//!     cargo run --release --example bench_sample -- --model DIR --size 256 --steps 20 \
//!         --json bench-out/dream3d_sample_256.json

use anyhow::{Context, Result};
use dream3d::prompt::Gaussian;
use dream3d::sample::{ImageSampler, ImageSeed, Models, SampleSettings};
use dream3d::stable_diffusion::StableDiffusion;
use dream3d::weights::Lookup;
use std::time::Instant;

mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PROMPT: &str = "a photograph of an astronaut riding a horse";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| common::arg(&args, flag);
    let usage = "usage: bench_sample --model DIR --size PX --json OUT.json [--steps N] [--reps N]";
    let model = value("--model").context(usage)?;
    let size: usize = value("--size").context(usage)?.parse()?;
    let out = value("--json").context(usage)?;
    let steps: usize = value("--steps").map_or(Ok(20), |s| s.parse())?;
    let reps: usize = value("--reps").map_or(Ok(2), |r| r.parse())?;

    let device = dream3d::device::best_device()?;
    let files = Lookup {
        offline: true,
        ..Lookup::default()
    }
    .resolve(&model)?;
    let sd = StableDiffusion::load(files, dream3d::device::default_dtype(&device), &device)?;
    let settings = SampleSettings {
        steps,
        guidance: 7.5,
        width: size,
        height: size,
        batch: 1,
    };
    let mut times = Vec::with_capacity(reps);
    for rep in 0..reps {
        // As the pipeline does per call: encode the prompts, then sample and decode.
        let start = Instant::now();
        let sampler = ImageSampler::new(Models::from(&sd), settings.clone(), "")?;
        let cond = Gaussian::point(&sd.encode_text(PROMPT)?.squeeze(0)?)?;
        let seed = ImageSeed {
            seed: rep as u64,
            init_latents: None,
        };
        sampler.images(&cond, &[seed], || {})?;
        times.push(start.elapsed().as_secs_f64());
        eprintln!("{size} px: {:.2} s", times[rep]);
    }
    let result = serde_json::json!({ "sample": common::summary(&times)? });
    std::fs::write(&out, serde_json::to_string_pretty(&result)?)?;
    Ok(())
}
