//! Multi-view score distillation (MVDream-threestudio's guidance): noise the rendered views'
//! latents at one timestep, let the multi-view UNet predict the noise with and without the
//! prompt, and turn classifier-free guidance into a gradient on the latents — by default
//! MVDream's x0-reconstruction loss with its per-object CFG rescale, or classic SDS.

use crate::camera::Camera;
use crate::diffusion::schedule::NoiseSchedule;
use crate::models::unet::{UNet2DConditionModel, Views};
use candle_core::{DType, Result as CResult, Tensor};
use serde::{Deserialize, Serialize};

/// How guidance becomes a gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuidanceLoss {
    /// ½‖z − sg(x̂₀)‖²/B with x̂₀ the guided clean-latent estimate (MVDream's default).
    Reconstruction,
    /// Classic SDS: gradient w(t)·(ε̂ − ε) with w(t) = 1 − ᾱ_t.
    Sds,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GuidanceSettings {
    /// Classifier-free guidance scale.
    pub scale: f64,
    /// Blend towards x̂₀ rescaled to the unguided estimate's standard deviation, per object
    /// (reconstruction loss only; 0 disables).
    pub rescale: f64,
    pub loss: GuidanceLoss,
}

impl Default for GuidanceSettings {
    /// `mvdream-sd21.yaml`: guidance 50, reconstruction loss, rescale 0.5.
    fn default() -> Self {
        Self {
            scale: 50.0,
            rescale: 0.5,
            loss: GuidanceLoss::Reconstruction,
        }
    }
}

/// The gradient on the latents and the loss it is the gradient of.
pub struct LatentGradient {
    pub grad: Tensor,
    pub loss: f64,
}

/// Unbiased standard deviation of each object's `views` consecutive latents (as torch.std).
fn std_per_object(x: &Tensor, views: usize) -> CResult<Tensor> {
    let objects = x.dim(0)? / views;
    let flat = x.reshape((objects, ()))?;
    let n = flat.dim(1)? as f64;
    let centred = flat.broadcast_sub(&flat.mean_keepdim(1)?)?;
    (centred.sqr()?.sum_keepdim(1)? / (n - 1.0))?.sqrt()
}

/// The gradient on `latents` (B × C × h × w, objects' views consecutive) given the noisy
/// latents at ᾱ = `alpha`, the noise added, and the model's predicted clean latents and noise
/// with (`cond`) and without (`uncond`) the prompt.
pub fn latent_gradient(
    settings: &GuidanceSettings,
    views: usize,
    latents: &Tensor,
    noise: &Tensor,
    alpha: f64,
    (x0_cond, eps_cond): (&Tensor, &Tensor),
    (x0_uncond, eps_uncond): (&Tensor, &Tensor),
) -> CResult<LatentGradient> {
    let batch = latents.dim(0)? as f64;
    let guided = |cond: &Tensor, uncond: &Tensor| -> CResult<Tensor> {
        uncond + ((cond - uncond)? * settings.scale)?
    };
    let grad = match settings.loss {
        GuidanceLoss::Reconstruction => {
            // x̂₀ is affine in ε̂, so guiding x̂₀ equals x̂₀ of the guided ε.
            let mut x0 = guided(x0_cond, x0_uncond)?;
            if settings.rescale > 0.0 {
                let eps = 1e-8;
                let factor = ((std_per_object(x0_cond, views)? + eps)?
                    / (std_per_object(&x0, views)? + eps)?)?;
                let shape = x0.dims().to_vec();
                let objects = shape[0] / views;
                let rescaled = x0
                    .reshape((objects, ()))?
                    .broadcast_mul(&factor)?
                    .reshape(shape)?;
                x0 = ((rescaled * settings.rescale)? + (x0 * (1.0 - settings.rescale))?)?;
            }
            (latents - x0)?
        }
        GuidanceLoss::Sds => {
            let eps = guided(eps_cond, eps_uncond)?;
            ((eps - noise)? * (1.0 - alpha))?
        }
    };
    // A non-finite loss is for the caller to catch (the run stops with its last good state).
    let loss = 0.5
        * grad
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?
        / batch;
    Ok(LatentGradient {
        grad: (grad / batch)?,
        loss,
    })
}

/// What turns the latents of rendered views into a gradient: MVDream, or a known target in
/// tests and benchmarks.
pub trait Guidance {
    /// Diffusion timesteps the model was trained on (1000 for Stable Diffusion).
    fn train_steps(&self) -> usize;

    /// The gradient on `latents` (B × C × h × w, objects' views consecutive) rendered from
    /// `cameras`, noised with `noise` at timestep `t`.
    fn gradient(
        &self,
        latents: &Tensor,
        cameras: &[Camera],
        t: usize,
        noise: &Tensor,
    ) -> CResult<LatentGradient>;
}

/// MVDream's UNet with the prompt's and the negative prompt's embeddings.
pub struct MultiViewGuidance<'a> {
    pub unet: &'a UNet2DConditionModel,
    pub schedule: &'a NoiseSchedule,
    /// 1 × 77 × D each.
    pub cond: Tensor,
    pub uncond: Tensor,
    pub views: usize,
    pub settings: GuidanceSettings,
}

impl Guidance for MultiViewGuidance<'_> {
    fn train_steps(&self) -> usize {
        self.schedule.num_train_timesteps()
    }

    fn gradient(
        &self,
        latents: &Tensor,
        cameras: &[Camera],
        t: usize,
        noise: &Tensor,
    ) -> CResult<LatentGradient> {
        let latents = latents.detach();
        // The camera-to-world matrices as threestudio hands them over (no axis flip).
        let conditioning: Vec<f32> = cameras
            .iter()
            .flat_map(|c| c.mvdream_conditioning().map(|v| v as f32))
            .collect();
        let cameras = Tensor::from_vec(conditioning, (cameras.len(), 16), latents.device())?
            .to_dtype(latents.dtype())?;
        let b = latents.dim(0)?;
        let noisy = self.schedule.add_noise(&latents, noise, t)?;
        let input = Tensor::cat(&[&noisy, &noisy], 0)?;
        // (cond, uncond) order, as MVDream-threestudio batches them.
        let context = Tensor::cat(
            &[
                &self.cond.repeat((b, 1, 1))?,
                &self.uncond.repeat((b, 1, 1))?,
            ],
            0,
        )?;
        let camera = Tensor::cat(&[&cameras, &cameras], 0)?;
        let output = self.unet.forward_views(
            &input,
            &vec![t as f64; 2 * b],
            &context,
            Views {
                camera: Some(&camera),
                frames: self.views,
            },
        )?;
        let alpha = self.schedule.alphas_cumprod[t];
        let split = |i: usize| {
            self.schedule
                .split_prediction(&noisy, &output.narrow(0, i * b, b)?, alpha)
        };
        let (x0_cond, eps_cond) = split(0)?;
        let (x0_uncond, eps_uncond) = split(1)?;
        latent_gradient(
            &self.settings,
            self.views,
            &latents,
            noise,
            alpha,
            (&x0_cond, &eps_cond),
            (&x0_uncond, &eps_uncond),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn randn(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// (x̂₀, ε̂) of an ε-prediction model that output `eps` at noisy latents `noisy`.
    fn x0_of(noisy: &Tensor, eps: &Tensor, alpha: f64) -> Tensor {
        ((noisy - (eps * (1.0 - alpha).sqrt()).unwrap()).unwrap() / alpha.sqrt()).unwrap()
    }

    struct Case {
        latents: Tensor,
        noise: Tensor,
        eps_cond: Tensor,
        eps_uncond: Tensor,
        x0_cond: Tensor,
        x0_uncond: Tensor,
        alpha: f64,
    }

    /// Two objects × 4 views of 4 × 3 × 3 latents, noised at ᾱ = 0.3.
    fn case() -> Case {
        let shape = (8, 4, 3, 3);
        let latents = randn(shape, 1);
        let noise = randn(shape, 2);
        let alpha: f64 = 0.3;
        let noisy = ((&latents * alpha.sqrt()).unwrap() + (&noise * (1.0 - alpha).sqrt()).unwrap())
            .unwrap();
        let eps_cond = randn(shape, 3);
        let eps_uncond = randn(shape, 4);
        Case {
            x0_cond: x0_of(&noisy, &eps_cond, alpha),
            x0_uncond: x0_of(&noisy, &eps_uncond, alpha),
            latents,
            noise,
            eps_cond,
            eps_uncond,
            alpha,
        }
    }

    fn gradient(c: &Case, settings: GuidanceSettings) -> LatentGradient {
        latent_gradient(
            &settings,
            4,
            &c.latents,
            &c.noise,
            c.alpha,
            (&c.x0_cond, &c.eps_cond),
            (&c.x0_uncond, &c.eps_uncond),
        )
        .unwrap()
    }

    #[test]
    fn reconstruction_gradient_follows_mvdreams_formula_per_object() {
        let c = case();
        let s = GuidanceSettings::default();
        let got = gradient(&c, s);
        // Reference, written out elementwise in f64.
        let (z, xc, xu) = (values(&c.latents), values(&c.x0_cond), values(&c.x0_uncond));
        let per_object = z.len() / 2;
        let x0_cfg: Vec<f64> = xc
            .iter()
            .zip(&xu)
            .map(|(c, u)| u + s.scale * (c - u))
            .collect();
        let std = |x: &[f64]| {
            let mean = x.iter().sum::<f64>() / x.len() as f64;
            (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
        };
        let mut want = vec![];
        for o in 0..2 {
            let range = o * per_object..(o + 1) * per_object;
            let factor = (std(&xc[range.clone()]) + 1e-8) / (std(&x0_cfg[range.clone()]) + 1e-8);
            for i in range {
                let x0 = 0.5 * x0_cfg[i] * factor + 0.5 * x0_cfg[i];
                want.push((z[i] - x0) / 8.0);
            }
        }
        let loss: f64 = want.iter().map(|g| 0.5 * (g * 8.0).powi(2)).sum::<f64>() / 8.0;
        for (g, w) in values(&got.grad).iter().zip(&want) {
            assert!((g - w).abs() < 1e-9 * w.abs().max(1.0), "{g} vs {w}");
        }
        assert!((got.loss - loss).abs() < 1e-9 * loss);
    }

    #[test]
    fn reconstruction_without_rescale_is_sds_weighted_by_sigma_over_alpha() {
        let c = case();
        let recon = gradient(
            &c,
            GuidanceSettings {
                rescale: 0.0,
                ..GuidanceSettings::default()
            },
        );
        let sds = gradient(
            &c,
            GuidanceSettings {
                loss: GuidanceLoss::Sds,
                ..GuidanceSettings::default()
            },
        );
        // SDS carries w(t) = 1 − ᾱ; the reconstruction's implicit weight is √((1 − ᾱ)/ᾱ).
        let ratio = ((1.0 - c.alpha) / c.alpha).sqrt() / (1.0 - c.alpha);
        for (r, s) in values(&recon.grad).iter().zip(values(&sds.grad)) {
            assert!(
                (r - ratio * s).abs() < 1e-9 * r.abs().max(1.0),
                "{r} vs {s}"
            );
        }
    }

    #[test]
    fn sds_gradient_is_the_weighted_guided_noise_residual() {
        let c = case();
        let s = GuidanceSettings {
            loss: GuidanceLoss::Sds,
            scale: 7.5,
            ..GuidanceSettings::default()
        };
        let got = values(&gradient(&c, s).grad);
        let (n, ec, eu) = (values(&c.noise), values(&c.eps_cond), values(&c.eps_uncond));
        for i in 0..got.len() {
            let guided = eu[i] + 7.5 * (ec[i] - eu[i]);
            let want = (1.0 - c.alpha) * (guided - n[i]) / 8.0;
            assert!((got[i] - want).abs() < 1e-12, "{i}");
        }
    }
}
