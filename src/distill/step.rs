//! One score-distillation step, across the candle ↔ wgpu boundary: render groups of views on
//! the GPU, encode them to latents with candle (keeping the graph), take the guidance's
//! gradient on the latents, backpropagate it through the VAE encoder and the resize to the
//! pixels, then through the renderer into the field, and step AdamW.

use super::guidance::Guidance;
use super::latents::LatentEncoder;
use super::schedule::{Stages, TimestepSchedule};
use crate::camera::{Camera, CameraRanges};
use crate::error::{Error, Result};
use crate::field::{Background, FieldConfig, RenderSettings};
use crate::gpu::{AdamConfig, GpuField};
use crate::random::{randn, step_rng};
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The occupancy grid's refresh (nerfacc's defaults, as threestudio uses them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OccupancySettings {
    /// Steps between updates.
    pub every: u64,
    /// Updates before this step re-evaluate every cell; later ones a quarter drawn uniformly
    /// and a quarter of the occupied ones (nerfacc's `warmup_steps`).
    pub warmup: u64,
    pub decay: f32,
    /// σ·step below which a cell is empty.
    pub threshold: f32,
}

impl Default for OccupancySettings {
    fn default() -> Self {
        Self {
            every: 16,
            warmup: 256,
            decay: 0.95,
            threshold: 0.01,
        }
    }
}

/// Everything the optimisation of one asset depends on (MVDream-threestudio's
/// `mvdream-sd21.yaml` by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillSettings {
    pub steps: u64,
    /// Views per object, denoised jointly (MVDream's 4).
    pub views: usize,
    pub stages: Stages,
    pub timesteps: TimestepSchedule,
    pub cameras: CameraRanges,
    /// Square size the diffusion model sees (renders are resized to it).
    pub image_size: usize,
    pub samples_per_ray: u32,
    /// Probability that a step's views are rendered over one random solid colour instead of
    /// the field's background (threestudio's `random_aug`, shared by the batch).
    pub background_augmentation: f64,
    pub occupancy: OccupancySettings,
    pub field: FieldConfig,
    pub adam: AdamConfig,
    /// Seeds the field's initialisation and every step's cameras and noise.
    pub seed: u64,
}

impl Default for DistillSettings {
    fn default() -> Self {
        Self {
            steps: 10_000,
            views: 4,
            stages: Stages::default(),
            timesteps: TimestepSchedule::default(),
            cameras: CameraRanges::default(),
            image_size: 256,
            samples_per_ray: 512,
            background_augmentation: 0.5,
            occupancy: OccupancySettings::default(),
            // threestudio's neural environment map behind the object.
            field: FieldConfig {
                background: Background::neural(),
                ..FieldConfig::default()
            },
            adam: AdamConfig::default(),
            seed: 0,
        }
    }
}

impl DistillSettings {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(m));
        if self.views != 4 {
            return bad(format!(
                "views = {}: MVDream denoises exactly 4 views 90° apart",
                self.views
            ));
        }
        self.stages.check(self.views).map_err(Error::Input)?;
        if self.occupancy.every == 0 {
            return bad("occupancy.every = 0: the occupancy grid needs updating every N ≥ 1 steps (threestudio: 16)".into());
        }
        if !(0.0..=1.0).contains(&self.background_augmentation) {
            return bad(format!(
                "background_augmentation = {}: a probability in [0, 1]",
                self.background_augmentation
            ));
        }
        if self.image_size % 8 != 0 || self.image_size < 32 {
            return bad(format!(
                "image_size = {}: use a multiple of 8 of at least 32 (MVDream: 256)",
                self.image_size
            ));
        }
        if self.cameras.views != self.views {
            return bad(format!(
                "cameras.views = {} differs from views = {}",
                self.cameras.views, self.views
            ));
        }
        self.field.validate()
    }
}

/// Wall time of each stage of a step (in the mesh stage, `render` includes the surface's
/// extraction, and `render_backward` marching tetrahedra's backward and the regularisers).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimes {
    pub render: f64,
    pub encode: f64,
    pub guidance: f64,
    pub encode_backward: f64,
    pub render_backward: f64,
    pub optimizer: f64,
}

/// What a step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: u64,
    pub loss: f64,
    pub t: usize,
    pub size: u32,
    /// ‖∂loss/∂pixels‖.
    pub pixel_grad_norm: f64,
    pub seconds: StageTimes,
}

/// The field being distilled and the settings that drive it.
pub struct Distiller {
    pub field: GpuField,
    pub settings: DistillSettings,
}

fn seconds(since: Instant) -> f64 {
    Duration::as_secs_f64(&since.elapsed())
}

impl Distiller {
    /// Cameras of step `step`: `batch / views` groups from the training ranges.
    fn cameras(&self, step: u64, rng: &mut impl Rng) -> Vec<Camera> {
        let groups = self.settings.stages.batch(step) / self.settings.views;
        (0..groups)
            .flat_map(|_| self.settings.cameras.sample(rng))
            .collect()
    }

    /// Runs step `step` (0-based). A non-finite loss leaves the field untouched.
    pub fn step(
        &mut self,
        step: u64,
        guidance: &dyn Guidance,
        encoder: &LatentEncoder,
    ) -> Result<StepReport> {
        let s = &self.settings;
        let size = s.stages.size(step);
        // One generator per step, seeded by the step alone: a resumed run repeats an
        // uninterrupted one.
        let mut rng = step_rng(s.seed, step);
        let cameras = self.cameras(step, &mut rng);
        let mut times = StageTimes::default();

        let start = Instant::now();
        let settings = RenderSettings {
            samples_per_ray: s.samples_per_ray,
            stratified_seed: Some(rng.random()),
            background: (rng.random::<f64>() < s.background_augmentation)
                .then(|| [rng.random(), rng.random(), rng.random()]),
            ..RenderSettings::default()
        };
        let rendered = self.field.render(&cameras, size, size, &settings)?;
        times.render = seconds(start);

        let score = score_views(
            &rendered.color,
            &cameras,
            size,
            |rng| s.timesteps.sample(step, guidance.train_steps(), rng),
            step,
            &mut rng,
            guidance,
            encoder,
        )?;
        times.encode = score.seconds[0];
        times.guidance = score.seconds[1];
        times.encode_backward = score.seconds[2];

        let start = Instant::now();
        self.field.backward(&score.grad)?;
        times.render_backward = seconds(start);

        let start = Instant::now();
        self.field.adam_step(&s.adam)?;
        let o = s.occupancy;
        if step % o.every == 0 {
            let chosen = (step >= o.warmup).then(|| self.field.occupancy.sample_cells(&mut rng));
            let seed = rng.random();
            self.field.update_occupancy(
                seed,
                s.samples_per_ray,
                chosen.as_deref(),
                o.decay,
                o.threshold,
            )?;
        }
        self.field.ctx.wait()?;
        times.optimizer = seconds(start);

        Ok(StepReport {
            step,
            loss: score.loss,
            t: score.t,
            size,
            pixel_grad_norm: score.grad_norm,
            seconds: times,
        })
    }
}

/// What the guidance makes of a batch of rendered views.
pub struct ViewScore {
    pub loss: f64,
    pub t: usize,
    /// The views' square size.
    pub size: u32,
    /// dL/d(rgb) per pixel (view-major, row-major; opacity 0), as the renderers take it.
    pub grad: Vec<[f32; 4]>,
    pub grad_norm: f64,
    /// Encoding, guidance, and the backward through the encoder.
    pub seconds: [f64; 3],
}

/// Encodes `views` (per pixel rgba, `size`² each, rendered from `cameras`) to latents keeping
/// the graph, takes the guidance's gradient at a timestep from `timestep`, and brings it back
/// to the pixels. A non-finite loss or pixel gradient is an [`Error::NonFinite`] at `step`.
#[allow(clippy::too_many_arguments)]
pub fn score_views(
    views: &[[f32; 4]],
    cameras: &[Camera],
    size: u32,
    timestep: impl FnOnce(&mut StdRng) -> usize,
    step: u64,
    rng: &mut StdRng,
    guidance: &dyn Guidance,
    encoder: &LatentEncoder,
) -> Result<ViewScore> {
    let device = encoder.vae_device();
    let dtype = encoder.vae_dtype();
    let start = Instant::now();
    let views =
        Var::from_tensor(&to_planar(views, cameras.len(), size, &device)?.to_dtype(dtype)?)?;
    let (z, h, w) = encoder.latent_shape();
    let shape = [cameras.len(), z, h, w];
    let posterior = randn(rng, &shape, dtype, &device)?;
    let latents = encoder.encode(views.as_tensor(), &posterior)?;
    let encode = seconds(start);

    let start = Instant::now();
    let t = timestep(rng);
    let noise = randn(rng, &shape, dtype, &device)?;
    let gradient = guidance.gradient(&latents, cameras, t, &noise)?;
    let guided = seconds(start);
    if !gradient.loss.is_finite() {
        return Err(Error::NonFinite {
            step,
            what: format!("guidance loss {}", gradient.loss),
        });
    }

    let start = Instant::now();
    let grads = (latents * gradient.grad.detach())?.sum_all()?.backward()?;
    let pixel_grad = grads
        .get(views.as_tensor())
        .ok_or_else(|| Error::Gpu("the rendered views got no gradient".into()))?
        .to_dtype(DType::F32)?;
    // In f64: large but finite gradients must not overflow into a false alarm.
    let grad_norm = pixel_grad
        .to_dtype(DType::F64)?
        .sqr()?
        .sum_all()?
        .sqrt()?
        .to_scalar::<f64>()?;
    if !grad_norm.is_finite() {
        return Err(Error::NonFinite {
            step,
            what: "pixel gradient".into(),
        });
    }
    let grad = to_interleaved(&pixel_grad, size)?;
    Ok(ViewScore {
        loss: gradient.loss,
        t,
        size,
        grad,
        grad_norm,
        seconds: [encode, guided, seconds(start)],
    })
}

/// Rendered pixels (view-major, row-major, rgba) → B × 3 × size × size.
fn to_planar(color: &[[f32; 4]], views: usize, size: u32, device: &Device) -> Result<Tensor> {
    let pixels = (size * size) as usize;
    let mut planar = vec![0f32; views * 3 * pixels];
    for v in 0..views {
        for p in 0..pixels {
            let c = color[v * pixels + p];
            for k in 0..3 {
                planar[(v * 3 + k) * pixels + p] = c[k];
            }
        }
    }
    let size = size as usize;
    Ok(Tensor::from_vec(planar, (views, 3, size, size), device)?)
}

/// B × 3 × size × size gradients → per pixel (rgb, opacity = 0), as the renderer takes them.
fn to_interleaved(grad: &Tensor, size: u32) -> Result<Vec<[f32; 4]>> {
    let views = grad.dim(0)?;
    let planar: Vec<f32> = grad.flatten_all()?.to_vec1()?;
    let pixels = (size * size) as usize;
    Ok((0..views * pixels)
        .map(|i| {
            let (v, p) = (i / pixels, i % pixels);
            let at = |k: usize| planar[(v * 3 + k) * pixels + p];
            [at(0), at(1), at(2), 0.0]
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_layouts_round_trip() {
        let size = 3;
        let color: Vec<[f32; 4]> = (0..2 * 9)
            .map(|i| [i as f32, 100.0 + i as f32, 200.0 + i as f32, 1.0])
            .collect();
        let planar = to_planar(&color, 2, size, &Device::Cpu).unwrap();
        // View 1, green, row 2, column 0 is pixel 9 + 6.
        let g: f32 = planar
            .get(1)
            .unwrap()
            .get(1)
            .unwrap()
            .get(2)
            .unwrap()
            .get(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(g, 115.0);
        let back = to_interleaved(&planar, size).unwrap();
        for (b, c) in back.iter().zip(&color) {
            assert_eq!(&b[..3], &c[..3]);
            assert_eq!(b[3], 0.0);
        }
    }

    #[test]
    fn only_four_views_are_accepted() {
        let s = DistillSettings {
            views: 2,
            ..DistillSettings::default()
        };
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("exactly 4 views"));
        assert!(DistillSettings::default().validate().is_ok());
    }
}
