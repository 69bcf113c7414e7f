//! 2D sampling: each image's conditioning drawn from a prompt Gaussian, DDIM with
//! classifier-free guidance through Stable Diffusion, decoded to 8-bit RGB.
//!
//! Every image depends only on its own seed (and optional initial latents), never on its
//! neighbours in a batch, so any one image can be regenerated alone.

use crate::diffusion::{sample_with_guidance, DdimSampler};
use crate::error::{Error, Result};
use crate::imaging::to_rgb_images;
use crate::prompt::Gaussian;
use crate::stable_diffusion::StableDiffusion;
use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// The sampler's knobs (DreamDistribution's inference defaults: DDIM 50, CFG 7.5).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleSettings {
    pub steps: usize,
    pub guidance: f64,
    pub width: usize,
    pub height: usize,
    /// Images per UNet call (each call evaluates 2 × batch: unconditional and conditional).
    pub batch: usize,
}

impl SampleSettings {
    /// C × h × w of the initial latents, after checking the image size suits the VAE.
    pub fn latent_shape(&self, sd: &StableDiffusion) -> Result<[usize; 3]> {
        let f = sd.vae.config.downscale();
        for (name, v) in [("--width", self.width), ("--height", self.height)] {
            if v == 0 || v % f != 0 {
                return Err(Error::Input(format!(
                    "{name} {v} is not a positive multiple of {f} (the VAE's downscale factor)"
                )));
            }
        }
        if self.steps == 0 || self.batch == 0 {
            return Err(Error::Input(
                "--steps and --batch must be at least 1".into(),
            ));
        }
        Ok([sd.unet.config.in_channels, self.height / f, self.width / f])
    }
}

/// One image to make: its seed and, optionally, its own initial latents (C × h × w).
pub struct ImageSeed {
    pub seed: u64,
    pub init_latents: Option<Tensor>,
}

/// An image's initial latents (1 × C × h × w) and conditioning (1 × 77 × D) from its seed.
/// The latents are drawn first and ε second, always the same number of values, so one seed
/// gives the same noise whatever γ, the edit, the composition or `--init-noise`: sweeping a
/// setting shows the same instance changing.
pub fn draw(
    gaussian: &Gaussian,
    image: &ImageSeed,
    latent_shape: [usize; 3],
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(image.seed);
    let n: usize = latent_shape.iter().product();
    let noise: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
    let latents = match &image.init_latents {
        Some(given) => given.to_device(device)?.to_dtype(DType::F32)?,
        None => Tensor::from_vec(noise, latent_shape.as_slice(), device)?,
    };
    let cond = gaussian.sample(&mut rng)?;
    Ok((latents.unsqueeze(0)?, cond.unsqueeze(0)?))
}

/// DDIM + guidance + VAE decode for batches of images of one conditioning source.
pub struct ImageSampler<'a> {
    sd: &'a StableDiffusion,
    ddim: DdimSampler,
    /// 1 × 77 × D embedding of the negative prompt.
    uncond: Tensor,
    settings: SampleSettings,
    latent_shape: [usize; 3],
}

impl<'a> ImageSampler<'a> {
    pub fn new(sd: &'a StableDiffusion, settings: SampleSettings, negative: &str) -> Result<Self> {
        Ok(Self {
            latent_shape: settings.latent_shape(sd)?,
            ddim: DdimSampler::new(sd.schedule.clone(), settings.steps),
            uncond: sd.encode_text(negative)?,
            settings,
            sd,
        })
    }

    pub fn latent_shape(&self) -> [usize; 3] {
        self.latent_shape
    }

    /// The images of `seeds` (at most `batch` of them), calling `on_step` after each DDIM step.
    pub fn images(
        &self,
        gaussian: &Gaussian,
        seeds: &[ImageSeed],
        mut on_step: impl FnMut(),
    ) -> Result<Vec<RgbImage>> {
        let device = self.sd.unet_device();
        let dtype = self.sd.dtype;
        let (latents, conds): (Vec<Tensor>, Vec<Tensor>) = seeds
            .iter()
            .map(|s| draw(gaussian, s, self.latent_shape, &device))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let latents = Tensor::cat(&latents, 0)?.to_dtype(dtype)?;
        let cond = Tensor::cat(&conds, 0)?
            .to_device(&device)?
            .to_dtype(dtype)?;
        let uncond = self.uncond.to_dtype(dtype)?.repeat((seeds.len(), 1, 1))?;
        let x0 = sample_with_guidance(
            &self.sd.unet,
            &self.ddim,
            &latents,
            &uncond,
            &cond,
            self.settings.guidance,
            |_, _| on_step(),
        )?;
        let decoded = self
            .sd
            .vae
            .decode(&(x0 / self.sd.vae.config.scaling_factor)?)?;
        to_rgb_images(&decoded)
    }
}
