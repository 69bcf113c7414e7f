//! The mesh stage of `generate`, after the field (threestudio's DMTet refinement): the field's
//! density − threshold starts a deformable tetrahedral grid whose surface, rendered as normal
//! maps through the differentiable rasteriser, is refined by the same multi-view guidance (the
//! geometry phase, as prolificdreamer-geometry); then, the geometry frozen, a copy of the field
//! is fitted so that its albedo at the surface point under each pixel satisfies the guidance
//! (the texture phase, as prolificdreamer-texture). Steps are numbered after the field's, so
//! one run directory holds one metrics log; each phase keeps its checkpoint and resumes from it.

use super::guidance::Guidance;
use super::latents::LatentEncoder;
use super::run::{GenerateConfig, GenerateEvent, VALIDATION_DIR};
use super::schedule::{Ramp, TimestepSchedule};
use super::step::{score_views, StageTimes, ViewScore};
use crate::camera::Camera;
use crate::dmtet::{extract, sdf_from_field, sign_consistency, Surface, TetGrid};
use crate::error::{Error, Result};
use crate::gpu::surface::SurfaceRenderer;
use crate::gpu::{AdamConfig, GpuField};
use crate::imaging::{contact_sheet, save_png};
use crate::mesh::export::albedo;
use crate::mesh::surface::{laplacian_smoothness, normal_consistency};
use crate::random::step_rng;
use crate::run_dir::RunDir;
use crate::turntable::Turntable;
use candle_core::{DType, Device, Tensor};
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The grid's signed distances and deformations with their Adam state.
pub const SURFACE_FILE: &str = "surface.safetensors";
/// The field whose albedo the texture phase fits (a copy of the stage-1 field).
pub const TEXTURE_FILE: &str = "texture.safetensors";
/// Identifies surface checkpoints among safetensors files.
const SURFACE_FORMAT: &str = "dream3d-dmtet";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefineSettings {
    /// Geometry steps: the grid refined on normal maps. With `texture_steps`, 0 skips the mesh
    /// stage (the field's isosurface is exported).
    pub geometry_steps: u64,
    /// Texture steps: the field's albedo at the surface, the geometry frozen.
    pub texture_steps: u64,
    /// Cells per side of the tetrahedral grid (threestudio: 128).
    pub resolution: u32,
    /// Density at the surface the grid starts from (the export's 25).
    pub threshold: f32,
    /// Square size of the rendered views (resized to the model's input).
    pub image_size: u32,
    /// Timestep range (threestudio's refine configs end at [0.02, 0.5], where MVDream's
    /// schedule for the field ends too).
    pub timesteps: TimestepSchedule,
    /// Adam on the signed distances and deformations (prolificdreamer-geometry's).
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    /// Weights of the mean normal consistency over edges and of the mean Laplacian norm over
    /// vertices (prolificdreamer-geometry's λ).
    pub normal_consistency: f64,
    pub laplacian: f64,
    /// Weight of nvdiffrec's SDF sign regulariser (`dmtet::sign_consistency`), against
    /// spurious surfaces; threestudio's refine configs leave it out, and so does the default.
    pub sign_consistency: f64,
    /// AdamW on the field in the texture phase (prolificdreamer-texture's learning rates).
    pub texture_adam: AdamConfig,
    /// Solid colour behind the surface.
    pub background: [f32; 3],
}

impl Default for RefineSettings {
    fn default() -> Self {
        let constant = |v| Ramp {
            start_step: 0,
            start: v,
            end: v,
            end_step: 0,
        };
        Self {
            geometry_steps: 1000,
            texture_steps: 1000,
            resolution: crate::dmtet::DEFAULT_RESOLUTION,
            threshold: 25.0,
            image_size: 256,
            timesteps: TimestepSchedule {
                min: constant(0.02),
                max: constant(0.5),
            },
            lr: 0.005,
            betas: [0.9, 0.99],
            eps: 1e-15,
            normal_consistency: 1e4,
            laplacian: 1e4,
            sign_consistency: 0.0,
            texture_adam: AdamConfig::default(),
            background: [1.0; 3],
        }
    }
}

impl RefineSettings {
    /// Whether the run has a mesh stage.
    pub fn enabled(&self) -> bool {
        self.geometry_steps + self.texture_steps > 0
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(format!("refine: {m}")));
        if self.resolution < 4 {
            return bad(format!(
                "resolution = {}: use at least 4 cells per side (threestudio: 128)",
                self.resolution
            ));
        }
        if self.image_size < 16 {
            return bad(format!(
                "image_size = {}: render at least 16 pixels square",
                self.image_size
            ));
        }
        if !(self.lr > 0.0 && self.eps >= 0.0 && self.betas.iter().all(|b| (0.0..1.0).contains(b)))
        {
            return bad("lr > 0, eps ≥ 0 and betas in [0, 1) are required".into());
        }
        if self.normal_consistency < 0.0 || self.laplacian < 0.0 || self.sign_consistency < 0.0 {
            return bad("regulariser weights must not be negative".into());
        }
        if !self.background.iter().all(|c| (0.0..=1.0).contains(c)) {
            return bad("background: three values in [0, 1]".into());
        }
        Ok(())
    }
}

/// Adam (PyTorch's, no weight decay) over a flat vector.
#[derive(Debug, Clone)]
struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
}

impl Adam {
    fn new(len: usize) -> Self {
        Self {
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }

    /// Update number `t` (1-based).
    fn step(&mut self, s: &RefineSettings, t: u64, params: &mut [f64], grads: &[f64]) {
        let [b1, b2] = s.betas;
        let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= s.lr * (*m / c1) / ((*v / c2).sqrt() + s.eps);
        }
    }
}

/// The grid being refined: per grid point a signed distance (positive inside) and a raw
/// deformation, with their Adam state and the geometry steps taken.
pub struct SurfaceState {
    pub grid: TetGrid,
    pub sdf: Vec<f64>,
    pub deformation: Vec<[f64; 3]>,
    adam: Adam,
    pub step: u64,
}

#[derive(Serialize, Deserialize)]
struct SurfaceMeta {
    format: String,
    resolution: u32,
    radius: f64,
    step: u64,
}

impl SurfaceState {
    /// The grid over the field's box, started from its density − `threshold`, undeformed.
    pub fn from_field(field: &GpuField, resolution: u32, threshold: f32) -> Result<Self> {
        let grid = TetGrid::new(resolution, f64::from(field.config.radius));
        let sdf = sdf_from_field(&grid, field, threshold)?;
        let n = grid.points.len();
        let state = Self {
            grid,
            sdf,
            deformation: vec![[0.0; 3]; n],
            adam: Adam::new(4 * n),
            step: 0,
        };
        if state.surface().triangles.is_empty() {
            let peak = field
                .density_grid(resolution + 1)?
                .into_iter()
                .fold(0f32, f32::max);
            let advice = if peak > 0.0 {
                format!("set [refine] threshold lower, e.g. {:.3}, or ", peak * 0.5)
            } else {
                "the field is empty: ".into()
            };
            return Err(Error::Input(format!(
                "the field has no surface at density {threshold} (its highest on the grid is {peak:.3}): {advice}skip the mesh stage with --refine-steps 0"
            )));
        }
        Ok(state)
    }

    pub fn surface(&self) -> Surface {
        extract(&self.grid, &self.sdf, &self.deformation)
    }

    /// One Adam update from the gradients of the signed distances and the deformations.
    fn update(&mut self, s: &RefineSettings, grad_sdf: &[f64], grad_deformation: &[[f64; 3]]) {
        self.step += 1;
        let mut params: Vec<f64> = self.sdf.clone();
        params.extend(self.deformation.as_flattened());
        let mut grads = grad_sdf.to_vec();
        grads.extend(grad_deformation.as_flattened());
        self.adam.step(s, self.step, &mut params, &grads);
        let n = self.sdf.len();
        self.sdf.copy_from_slice(&params[..n]);
        self.deformation
            .as_flattened_mut()
            .copy_from_slice(&params[n..]);
    }

    fn is_finite(&self) -> bool {
        self.sdf
            .iter()
            .chain(self.deformation.as_flattened())
            .all(|v| v.is_finite())
    }

    /// Writes the grid's values, Adam state and step atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let n = self.sdf.len();
        let vector = |data: &[f64]| Tensor::from_slice(data, data.len(), &Device::Cpu);
        let tensors = [
            ("sdf", vector(&self.sdf)?),
            ("deformation", vector(self.deformation.as_flattened())?),
            ("adam_m", vector(&self.adam.m)?),
            ("adam_v", vector(&self.adam.v)?),
        ];
        debug_assert_eq!(self.adam.m.len(), 4 * n);
        let meta = SurfaceMeta {
            format: SURFACE_FORMAT.into(),
            resolution: self.grid.resolution,
            radius: self.grid.radius,
            step: self.step,
        };
        let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, t)| (*k, t)).collect();
        crate::weights::save_atomic(
            path,
            &named,
            HashMap::from([(
                "dream3d".to_string(),
                serde_json::to_string(&meta).expect("metadata serialises"),
            )]),
        )
    }

    /// A surface as [`SurfaceState::save`] left it.
    pub fn load(path: &Path) -> Result<Self> {
        let mut file = crate::weights::TensorFile::read(path, &Device::Cpu)?;
        let meta: SurfaceMeta = file
            .metadata
            .get("dream3d")
            .and_then(|m| serde_json::from_str(m).ok())
            .filter(|m: &SurfaceMeta| m.format == SURFACE_FORMAT)
            .ok_or_else(|| {
                Error::Input(format!(
                    "{}: not a dream3d surface checkpoint",
                    path.display()
                ))
            })?;
        let grid = TetGrid::new(meta.resolution, meta.radius);
        let n = grid.points.len();
        let mut take = |name: &str, len: usize| -> Result<Vec<f64>> {
            Ok(file
                .take(name, Some(&[len]))?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?)
        };
        let sdf = take("sdf", n)?;
        let deformation = take("deformation", 3 * n)?
            .chunks_exact(3)
            .map(|d| [d[0], d[1], d[2]])
            .collect();
        let adam = Adam {
            m: take("adam_m", 4 * n)?,
            v: take("adam_v", 4 * n)?,
        };
        Ok(Self {
            grid,
            sdf,
            deformation,
            adam,
            step: meta.step,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Geometry,
    Texture,
}

/// What a mesh-stage step did.
#[derive(Debug, Clone, Serialize)]
pub struct RefineReport {
    /// The run's step: the field's steps, then the geometry's, then the texture's.
    pub step: u64,
    pub phase: Phase,
    /// The guidance's loss.
    pub loss: f64,
    /// The regularisers' values (geometry phase).
    pub normal_consistency: f64,
    pub laplacian: f64,
    pub sign_consistency: f64,
    pub t: usize,
    pub size: u32,
    pub pixel_grad_norm: f64,
    pub vertices: usize,
    pub triangles: usize,
    pub seconds: StageTimes,
}

/// A step's report: its guidance score, regularisers (normal consistency, Laplacian, sign;
/// zero in the texture phase), surface size and times.
fn report(
    step: u64,
    phase: Phase,
    score: &ViewScore,
    [normal_consistency, laplacian, sign_consistency]: [f64; 3],
    surface: &Surface,
    seconds: StageTimes,
) -> RefineReport {
    RefineReport {
        step,
        phase,
        loss: score.loss,
        normal_consistency,
        laplacian,
        sign_consistency,
        t: score.t,
        size: score.size,
        pixel_grad_norm: score.grad_norm,
        vertices: surface.positions.len(),
        triangles: surface.triangles.len(),
        seconds,
    }
}

/// The renderer, cameras and guidance shared by both phases.
pub struct Refiner<'a> {
    pub config: &'a GenerateConfig,
    pub guidance: &'a dyn Guidance,
    pub encoder: &'a LatentEncoder<'a>,
    pub renderer: SurfaceRenderer,
}

/// Views over the background: rgb + (1 − coverage)·background, rgba kept for the backward.
fn over(views: &[[f32; 4]], background: [f32; 3]) -> Vec<[f32; 4]> {
    views
        .iter()
        .map(|v| {
            let a = 1.0 - v[3];
            [
                v[0] + a * background[0],
                v[1] + a * background[1],
                v[2] + a * background[2],
                v[3],
            ]
        })
        .collect()
}

/// dL/d(rgb, coverage) of the views from dL/d(rgb) of their composite over the background.
fn through_over(grad: &[[f32; 4]], background: [f32; 3]) -> Vec<[f32; 4]> {
    grad.iter()
        .map(|g| {
            let coverage = -(g[0] * background[0] + g[1] * background[1] + g[2] * background[2]);
            [g[0], g[1], g[2], coverage]
        })
        .collect()
}

fn seconds(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

impl Refiner<'_> {
    fn settings(&self) -> &RefineSettings {
        &self.config.refine
    }

    /// The step's cameras (one group of views) and random generator, seeded by the run's step.
    fn cameras(&self, step: u64) -> (Vec<Camera>, rand::rngs::StdRng) {
        let mut rng = step_rng(self.config.distill.seed, step);
        let cameras = self.config.distill.cameras.sample(&mut rng);
        (cameras, rng)
    }

    fn score(
        &self,
        views: &[[f32; 4]],
        cameras: &[Camera],
        phase_step: u64,
        step: u64,
        rng: &mut rand::rngs::StdRng,
    ) -> Result<ViewScore> {
        let s = self.settings();
        let train = self.guidance.train_steps();
        score_views(
            &over(views, s.background),
            cameras,
            s.image_size,
            |rng| s.timesteps.sample(phase_step, train, rng),
            step,
            rng,
            self.guidance,
            self.encoder,
        )
    }

    /// Geometry step `state.step` (run step `step`). A non-finite loss leaves the grid as it
    /// was; non-finite values after the update are an error before anything is saved.
    pub fn geometry_step(&mut self, state: &mut SurfaceState, step: u64) -> Result<RefineReport> {
        let s = self.settings().clone();
        let (cameras, mut rng) = self.cameras(step);
        let mut times = StageTimes::default();
        let start = Instant::now();
        let surface = state.surface();
        let views = self.renderer.render(
            &surface.positions,
            &surface.triangles,
            &cameras,
            s.image_size,
        )?;
        times.render = seconds(start);
        let score = self.score(&views, &cameras, state.step, step, &mut rng)?;
        [times.encode, times.guidance, times.encode_backward] = score.seconds;

        let start = Instant::now();
        let mut grad_positions = self
            .renderer
            .backward(&through_over(&score.grad, s.background))?;
        let (nc, nc_grad) = normal_consistency(&surface.positions, &surface.triangles);
        let (lap, lap_grad) = laplacian_smoothness(&surface.positions, &surface.triangles);
        for ((g, a), b) in grad_positions.iter_mut().zip(&nc_grad).zip(&lap_grad) {
            for k in 0..3 {
                g[k] += s.normal_consistency * a[k] + s.laplacian * b[k];
            }
        }
        let (mut grad_sdf, grad_deformation) =
            surface.backward(&state.grid, &state.sdf, &state.deformation, &grad_positions);
        let (sign, sign_grad) = sign_consistency(&surface, &state.sdf);
        for (g, s_g) in grad_sdf.iter_mut().zip(&sign_grad) {
            *g += s.sign_consistency * s_g;
        }
        times.render_backward = seconds(start);

        let start = Instant::now();
        state.update(&s, &grad_sdf, &grad_deformation);
        if !state.is_finite() {
            return Err(Error::NonFiniteSurface { step });
        }
        times.optimizer = seconds(start);
        Ok(report(
            step,
            Phase::Geometry,
            &score,
            [nc, lap, sign],
            &surface,
            times,
        ))
    }

    /// Texture step `field.step` (run step `step`) on the frozen `surface`: AdamW on `field`
    /// from the guidance's gradient on its albedo at the surface points under the pixels.
    pub fn texture_step(
        &mut self,
        surface: &Surface,
        field: &mut GpuField,
        step: u64,
    ) -> Result<RefineReport> {
        let s = self.settings().clone();
        let (cameras, mut rng) = self.cameras(step);
        let mut times = StageTimes::default();
        let start = Instant::now();
        let rendered = self.renderer.render_texture(
            &surface.positions,
            &surface.triangles,
            &cameras,
            s.image_size,
            |points| albedo(field, points),
        )?;
        times.render = seconds(start);
        let score = self.score(&rendered.image, &cameras, field.step, step, &mut rng)?;
        [times.encode, times.guidance, times.encode_backward] = score.seconds;

        let start = Instant::now();
        let grad_points = self
            .renderer
            .texture_backward(&through_over(&score.grad, s.background))?;
        field.albedo_backward(&rendered.points, &rendered.colours, &grad_points)?;
        times.render_backward = seconds(start);

        let start = Instant::now();
        field.adam_step(&s.texture_adam)?;
        times.optimizer = seconds(start);
        Ok(report(
            step,
            Phase::Texture,
            &score,
            [0.0; 3],
            surface,
            times,
        ))
    }

    /// 4 views at the evaluation cameras, side by side: normal maps of the grid's surface, or
    /// the surface coloured by `texture`.
    pub fn validation_grid(
        &mut self,
        surface: &Surface,
        texture: Option<&GpuField>,
    ) -> Result<RgbImage> {
        let s = self.settings().clone();
        let turntable = Turntable {
            frames: 4,
            size: s.image_size.max(64),
            ..Turntable::default()
        };
        let views = (0..4)
            .map(|i| {
                self.surface_view(
                    surface,
                    texture,
                    &turntable.camera(i),
                    turntable.size,
                    s.background,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(contact_sheet(&views, 4))
    }

    /// One view of the surface over `background`: its albedo from `texture`, or its normals.
    pub fn surface_view(
        &mut self,
        surface: &Surface,
        texture: Option<&GpuField>,
        camera: &Camera,
        size: u32,
        background: [f32; 3],
    ) -> Result<RgbImage> {
        let cameras = std::slice::from_ref(camera);
        let (positions, triangles) = (&surface.positions, &surface.triangles);
        let views = match texture {
            Some(field) => {
                self.renderer
                    .render_texture(positions, triangles, cameras, size, |points| {
                        albedo(field, points)
                    })?
                    .image
            }
            None => self.renderer.render(positions, triangles, cameras, size)?,
        };
        let mut image = RgbImage::new(size, size);
        for (px, c) in image.pixels_mut().zip(over(&views, background)) {
            *px = Rgb([c[0], c[1], c[2]].map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8));
        }
        Ok(image)
    }
}

/// The mesh stage's result: the refined grid, its surface (extracted once, for the texture
/// phase and the export alike) and the field its albedo comes from.
pub struct Refined {
    pub state: SurfaceState,
    pub surface: Surface,
    pub texture: GpuField,
}

pub enum RefineOutcome {
    Finished(Box<Refined>),
    Interrupted { next_step: u64 },
}

/// What the loop needs of a phase: its steps taken, a step, its checkpoint and its
/// validation grid.
trait PhaseState {
    const NAME: &'static str;
    /// Steps this phase has taken.
    fn done(&self) -> u64;
    /// Phase step `done()`, numbered `step` in the run.
    fn step(&mut self, refiner: &mut Refiner, step: u64) -> Result<RefineReport>;
    fn save(&self, path: &Path) -> Result<()>;
    fn grid(&self, refiner: &mut Refiner) -> Result<RgbImage>;
}

impl PhaseState for SurfaceState {
    const NAME: &'static str = "geometry";

    fn done(&self) -> u64 {
        self.step
    }

    fn step(&mut self, refiner: &mut Refiner, step: u64) -> Result<RefineReport> {
        refiner.geometry_step(self, step)
    }

    fn save(&self, path: &Path) -> Result<()> {
        SurfaceState::save(self, path)
    }

    fn grid(&self, refiner: &mut Refiner) -> Result<RgbImage> {
        refiner.validation_grid(&self.surface(), None)
    }
}

/// The texture phase: the field fitted on the frozen surface.
struct TextureState<'s> {
    surface: &'s Surface,
    field: GpuField,
}

impl PhaseState for TextureState<'_> {
    const NAME: &'static str = "texture";

    fn done(&self) -> u64 {
        self.field.step
    }

    fn step(&mut self, refiner: &mut Refiner, step: u64) -> Result<RefineReport> {
        refiner
            .texture_step(self.surface, &mut self.field, step)
            .map_err(|e| match e {
                Error::NonFiniteField { groups, .. } => Error::NonFiniteTexture { step, groups },
                e => e,
            })
    }

    fn save(&self, path: &Path) -> Result<()> {
        self.field.save(path)
    }

    fn grid(&self, refiner: &mut Refiner) -> Result<RgbImage> {
        refiner.validation_grid(self.surface, Some(&self.field))
    }
}

/// Steps `phase` from its checkpoint at `path` to `steps`, its step i numbered `first + i` in
/// the run. Returns the run step to resume at if stopped.
#[allow(clippy::too_many_arguments)]
fn run_phase<P: PhaseState>(
    refiner: &mut Refiner,
    phase: &mut P,
    path: &Path,
    first: u64,
    steps: u64,
    run: &RunDir,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(GenerateEvent),
) -> Result<Option<u64>> {
    let (checkpoint_every, validate_every) = (
        refiner.config.checkpoint_every,
        refiner.config.validate_every,
    );
    let due = |done: u64, every: u64| done % every == 0 || done == steps;
    run.truncate_metrics((first + phase.done()) as usize)?;
    while phase.done() < steps {
        let step = first + phase.done();
        if stop.load(Ordering::SeqCst) {
            phase.save(path)?;
            on_event(GenerateEvent::Checkpoint { next_step: step });
            return Ok(Some(step));
        }
        let report = match phase.step(refiner, step) {
            Ok(report) => report,
            Err(e @ Error::NonFinite { .. }) => {
                // Nothing was updated: keep the phase as the previous step left it.
                phase.save(path)?;
                return Err(e);
            }
            // Non-finite values after an update are not saved: the last checkpoint stays.
            Err(e) => return Err(e),
        };
        run.append_metrics(&serde_json::to_value(&report).expect("reports serialise"))?;
        on_event(GenerateEvent::Refine(&report));
        let done = phase.done();
        if due(done, validate_every) {
            let dir = run.path(VALIDATION_DIR);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let path = dir.join(format!("{}-{done:05}.png", P::NAME));
            save_png(&path, &phase.grid(refiner)?)?;
            on_event(GenerateEvent::Validation {
                step: first + done,
                path,
            });
        }
        if due(done, checkpoint_every) {
            phase.save(path)?;
            on_event(GenerateEvent::Checkpoint {
                next_step: first + done,
            });
        }
    }
    Ok(None)
}

/// Runs the mesh stage after `field` (the finished stage-1 field, saved in `run`) from its
/// checkpoints in `run`, with the field's stage's checkpoint and validation intervals, metrics,
/// Ctrl-C and non-finite guards.
pub fn run(
    refiner: &mut Refiner,
    field: GpuField,
    run: &RunDir,
    stop: &AtomicBool,
    mut on_event: impl FnMut(GenerateEvent),
) -> Result<RefineOutcome> {
    let config = refiner.config;
    let s = config.refine.clone();
    // Numbered after the field's steps as taken (more than configured if `--steps` shrank
    // after the field's stage ended), so no two metrics lines share a step.
    let first = field.step.max(config.distill.steps);
    let surface_path = run.path(SURFACE_FILE);
    let texture_path = run.path(TEXTURE_FILE);
    let mut state = if surface_path.is_file() {
        SurfaceState::load(&surface_path)?
    } else {
        let state = SurfaceState::from_field(&field, s.resolution, s.threshold)?;
        // A last good state from the start, as the field's stage keeps one.
        state.save(&surface_path)?;
        state
    };
    let texture_started = texture_path.is_file();
    if !texture_started {
        let stopped = run_phase(
            refiner,
            &mut state,
            &surface_path,
            first,
            s.geometry_steps,
            run,
            stop,
            &mut on_event,
        )?;
        if let Some(next_step) = stopped {
            return Ok(RefineOutcome::Interrupted { next_step });
        }
    }

    // The texture phase on the frozen surface, fitting the field further (its stage's result
    // stays in field.safetensors; the texture's is texture.safetensors).
    let surface = state.surface();
    let field = if texture_started {
        let ctx = field.ctx.clone();
        // One field on the GPU at a time.
        drop(field);
        GpuField::load(ctx, &texture_path)?
    } else {
        let mut texture = field;
        texture.step = 0;
        texture.reset_optimizer();
        if s.texture_steps > 0 {
            texture.save(&texture_path)?;
        }
        texture
    };
    let mut texture = TextureState {
        surface: &surface,
        field,
    };
    let stopped = run_phase(
        refiner,
        &mut texture,
        &texture_path,
        first + state.step,
        s.texture_steps,
        run,
        stop,
        &mut on_event,
    )?;
    if let Some(next_step) = stopped {
        return Ok(RefineOutcome::Interrupted { next_step });
    }
    let texture = texture.field;
    Ok(RefineOutcome::Finished(Box::new(Refined {
        state,
        surface,
        texture,
    })))
}
