//! Sampling images: each object's conditioning drawn from a prompt Gaussian, DDIM with
//! classifier-free guidance through Stable Diffusion — or through MVDream, where an object is
//! several views denoised together — decoded to 8-bit RGB.
//!
//! Every object depends only on its own seed (and optional initial latents), never on its
//! neighbours in a batch, so any one can be regenerated alone.

use crate::diffusion::{guided_ddim, DdimSampler, NoiseSchedule};
use crate::error::{Error, Result};
use crate::imaging::to_rgb_images;
use crate::models::unet::Views;
use crate::models::{AutoencoderKL, ClipTextModel, UNet2DConditionModel};
use crate::mvdream::MvdreamModel;
use crate::prompt::Gaussian;
use crate::stable_diffusion::StableDiffusion;
use crate::tokenizer::ClipTokenizer;
use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// The networks sampling needs, borrowed from Stable Diffusion or MVDream.
#[derive(Clone, Copy)]
pub struct Models<'a> {
    pub text_encoder: &'a ClipTextModel,
    pub tokenizer: &'a ClipTokenizer,
    pub unet: &'a UNet2DConditionModel,
    pub vae: &'a AutoencoderKL,
    pub schedule: &'a NoiseSchedule,
}

impl<'a> From<&'a StableDiffusion> for Models<'a> {
    fn from(sd: &'a StableDiffusion) -> Self {
        Self {
            text_encoder: &sd.text_encoder,
            tokenizer: &sd.tokenizer,
            unet: &sd.unet,
            vae: &sd.vae,
            schedule: &sd.schedule,
        }
    }
}

impl<'a> From<&'a MvdreamModel> for Models<'a> {
    fn from(m: &'a MvdreamModel) -> Self {
        Self {
            text_encoder: &m.text_encoder,
            tokenizer: &m.tokenizer,
            unet: &m.unet,
            vae: &m.vae,
            schedule: &m.schedule,
        }
    }
}

impl Models<'_> {
    /// The text encoder's 1 × 77 × D states for a plain prompt (the empty prompt is the
    /// unconditional embedding).
    pub fn encode_text(&self, prompt: &str) -> Result<Tensor> {
        let ids = self.tokenizer.encode(prompt)?;
        let ids = Tensor::new(ids.as_slice(), self.text_encoder.device())?.unsqueeze(0)?;
        Ok(self.text_encoder.forward(&ids)?)
    }

    pub fn device(&self) -> &Device {
        self.unet.device()
    }

    pub fn dtype(&self) -> DType {
        self.text_encoder.dtype()
    }

    /// Image resolution in pixels the UNet was trained at.
    pub fn resolution(&self) -> Option<usize> {
        Some(self.unet.config.sample_size()? * self.vae.config.downscale())
    }
}

/// The sampler's knobs (DreamDistribution's inference defaults: DDIM 50, CFG 7.5).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleSettings {
    pub steps: usize,
    pub guidance: f64,
    pub width: usize,
    pub height: usize,
    /// Objects per UNet call (each call evaluates them twice: unconditional and conditional).
    pub batch: usize,
}

impl SampleSettings {
    /// C × h × w of one image's initial latents, after checking the image size suits the VAE.
    pub fn latent_shape(&self, models: Models) -> Result<[usize; 3]> {
        let f = models.vae.config.downscale();
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
        Ok([
            models.unet.config.in_channels,
            self.height / f,
            self.width / f,
        ])
    }
}

/// One object to make: its seed and, optionally, its own initial latents (views × C × h × w).
pub struct ImageSeed {
    pub seed: u64,
    pub init_latents: Option<Tensor>,
}

/// An object's initial latents (views × C × h × w) and conditioning (1 × 77 × D) from its seed.
/// The latents are drawn first and ε second, always the same number of values, so one seed
/// gives the same noise whatever γ, the edit, the composition or `--init-noise`: sweeping a
/// setting shows the same instance changing.
pub fn draw(
    gaussian: &Gaussian,
    object: &ImageSeed,
    views: usize,
    latent_shape: [usize; 3],
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(object.seed);
    let shape = [views, latent_shape[0], latent_shape[1], latent_shape[2]];
    let n: usize = shape.iter().product();
    let noise: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
    let latents = match &object.init_latents {
        Some(given) => given
            .to_device(device)?
            .to_dtype(DType::F32)?
            .reshape(shape.as_slice())?,
        None => Tensor::from_vec(noise, shape.as_slice(), device)?,
    };
    let cond = gaussian.sample(&mut rng)?;
    Ok((latents, cond.unsqueeze(0)?))
}

/// DDIM + guidance + VAE decode for batches of objects of one conditioning source.
pub struct ImageSampler<'a> {
    models: Models<'a>,
    ddim: DdimSampler,
    /// 1 × 77 × D embedding of the negative prompt.
    uncond: Tensor,
    settings: SampleSettings,
    latent_shape: [usize; 3],
}

impl<'a> ImageSampler<'a> {
    pub fn new(models: Models<'a>, settings: SampleSettings, negative: &str) -> Result<Self> {
        Ok(Self {
            latent_shape: settings.latent_shape(models)?,
            ddim: DdimSampler::new(models.schedule.clone(), settings.steps),
            uncond: models.encode_text(negative)?,
            settings,
            models,
        })
    }

    pub fn latent_shape(&self) -> [usize; 3] {
        self.latent_shape
    }

    /// One image per seed (plain 2D sampling), calling `on_step` after each DDIM step.
    pub fn images(
        &self,
        gaussian: &Gaussian,
        seeds: &[ImageSeed],
        on_step: impl FnMut(),
    ) -> Result<Vec<RgbImage>> {
        Ok(self
            .objects(gaussian, seeds, None, on_step)?
            .into_iter()
            .flatten()
            .collect())
    }

    /// The views of each seed's object: one image per object without `cameras`, or one per
    /// camera (views × 16, MVDream's conditioning) denoised jointly.
    pub fn objects(
        &self,
        gaussian: &Gaussian,
        seeds: &[ImageSeed],
        cameras: Option<&Tensor>,
        mut on_step: impl FnMut(),
    ) -> Result<Vec<Vec<RgbImage>>> {
        let m = &self.models;
        let (device, dtype) = (m.device(), m.dtype());
        let views = cameras.map_or(Ok(1), |c| c.dim(0))?;
        let drawn = seeds
            .iter()
            .map(|s| draw(gaussian, s, views, self.latent_shape, device))
            .collect::<Result<Vec<_>>>()?;
        let latents: Vec<&Tensor> = drawn.iter().map(|(l, _)| l).collect();
        let latents = Tensor::cat(&latents, 0)?.to_dtype(dtype)?;
        // Every view of an object sees its object's conditioning.
        let per_view = |c: &Tensor| c.repeat((views, 1, 1));
        let conds = drawn
            .iter()
            .map(|(_, c)| per_view(&c.to_device(device)?.to_dtype(dtype)?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let cond = Tensor::cat(&conds, 0)?;
        let uncond = self
            .uncond
            .to_dtype(dtype)?
            .repeat((seeds.len() * views, 1, 1))?;
        let context = Tensor::cat(&[&uncond, &cond], 0)?;
        let images = 2 * seeds.len() * views;
        let camera = cameras
            .map(|c| {
                c.to_device(device)?
                    .to_dtype(dtype)?
                    .repeat((2 * seeds.len(), 1))
            })
            .transpose()?;
        let conditioning = Views {
            camera: camera.as_ref(),
            frames: views,
        };
        let x0 = guided_ddim(
            &self.ddim,
            &latents,
            self.settings.guidance,
            |x, t| {
                m.unet
                    .forward_views(x, &vec![t; images], &context, conditioning)
            },
            |_, _| on_step(),
        )?;
        let decoded = m.vae.decode(&(x0 / m.vae.config.scaling_factor)?)?;
        let mut all = to_rgb_images(&decoded)?.into_iter();
        Ok(seeds
            .iter()
            .map(|_| all.by_ref().take(views).collect())
            .collect())
    }
}
