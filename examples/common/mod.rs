//! What the benchmark examples share: timing statistics and peak memory (each example uses
//! a subset).
#![allow(dead_code)]

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))?
        .parse()?;
    Ok(kb * 1024)
}

/// `{"median_s", "times_s", "peak_rss_bytes"}`, the format of `benches/torch_*.py`.
pub fn summary(times: &[f64]) -> anyhow::Result<serde_json::Value> {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "median_s": sorted[sorted.len() / 2],
        "times_s": times,
        "peak_rss_bytes": peak_rss_bytes()?,
    }))
}

/// The value after `flag` on the command line.
pub fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// MVDream's networks at their real sizes with random weights: the 4-view UNet (sd-v2-base), SD's
/// VAE and the noise schedule; and the multi-view guidance over them with random prompt
/// embeddings.
pub struct RandomMvdream {
    pub unet: dream3d::models::UNet2DConditionModel,
    pub vae: dream3d::models::AutoencoderKL,
    pub schedule: dream3d::diffusion::schedule::NoiseSchedule,
    pub cond: candle_core::Tensor,
    pub uncond: candle_core::Tensor,
}

/// f16 on GPUs, as generate runs; f32 on the CPU, and with `--f32` there too (random
/// full-size weights can overflow f16, which trained ones do not).
pub fn network_dtype(args: &[String], dev: &candle_core::Device) -> candle_core::DType {
    if dev.is_cpu() || args.iter().any(|a| a == "--f32") {
        candle_core::DType::F32
    } else {
        candle_core::DType::F16
    }
}

impl RandomMvdream {
    pub fn new(dtype: candle_core::DType, dev: &candle_core::Device) -> anyhow::Result<Self> {
        use dream3d::mvdream::{MvUNetParams, MvdreamArchitecture};
        use dream3d::weights::Weights;
        let (config, layout) =
            MvUNetParams::default().unet_config(std::path::Path::new("sd-v2-base.yaml"))?;
        let unet = dream3d::models::UNet2DConditionModel::load(
            config,
            layout,
            &Weights::random(0, dtype, dev),
        )?;
        let arch = MvdreamArchitecture::default();
        let vae = dream3d::models::AutoencoderKL::load(
            arch.vae.clone(),
            &Weights::random(1, dtype, dev),
        )?;
        let embedding = |seed: u64| -> anyhow::Result<candle_core::Tensor> {
            Ok(candle_core::Tensor::randn(0f32, 1.0, (1, 77, 1024), dev)?
                .affine(0.1 * seed as f64, 0.0)?
                .to_dtype(dtype)?)
        };
        Ok(Self {
            unet,
            vae,
            schedule: dream3d::mvdream::checkpoint::noise_schedule()?,
            cond: embedding(2)?,
            uncond: embedding(3)?,
        })
    }

    /// MVDream's guidance at threestudio's settings.
    pub fn guidance(&self) -> dream3d::distill::guidance::MultiViewGuidance<'_> {
        dream3d::distill::guidance::MultiViewGuidance {
            unet: &self.unet,
            schedule: &self.schedule,
            cond: self.cond.clone(),
            uncond: self.uncond.clone(),
            views: 4,
            settings: dream3d::distill::guidance::GuidanceSettings::default(),
        }
    }

    /// The VAE encoder at MVDream's 256² input.
    pub fn encoder(&self) -> dream3d::distill::latents::LatentEncoder<'_> {
        dream3d::distill::latents::LatentEncoder {
            vae: &self.vae,
            size: 256,
        }
    }
}
