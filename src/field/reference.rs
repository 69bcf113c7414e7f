//! A plain-Rust f64 implementation of the field, the volume renderer and their backward pass:
//! the specification the WGSL kernels are tested against, written for clarity, not speed
//! (batches of rays run on every core).

use super::config::{Background, FieldConfig, ParamLayout};
use super::march::{box_hits, jitter, render_step, OccupancyGrid, RenderSettings};
use crate::camera::Ray;
use rayon::prelude::*;
use std::borrow::Cow;

/// Large primes of the spatial hash (Teschner et al., as instant-ngp); x's is 1.
pub const HASH_PRIMES: [u32; 3] = [1, 2_654_435_761, 805_459_861];

/// The index of grid vertex `v` in its level's table.
pub fn vertex_index(v: [u32; 3], resolution: u32, size: u32, dense: bool) -> u32 {
    if dense {
        let n = resolution + 1;
        v[0] + v[1] * n + v[2] * n * n
    } else {
        let h = v[0].wrapping_mul(HASH_PRIMES[0])
            ^ v[1].wrapping_mul(HASH_PRIMES[1])
            ^ v[2].wrapping_mul(HASH_PRIMES[2]);
        h % size
    }
}

/// One field evaluation with what its backward pass needs.
#[derive(Debug, Clone)]
pub struct FieldSample {
    pub sigma: f64,
    pub rgb: [f64; 3],
    /// dσ/d(raw density).
    pub dsigma_draw: f64,
    /// How near the sample is to a ReLU kink: the smallest |pre-activation| of a hidden unit of
    /// either MLP relative to the sum of its terms' magnitudes (what bounds the rounding error
    /// of the dot product). Below ~10⁻⁵ an f32 evaluation may take the other side of the kink,
    /// and its gradient then differs by the whole unit's term.
    pub kink_margin: f64,
    features: Vec<f64>,
    /// (parameter index of feature 0 of the entry, trilinear weight) for 8 corners per level.
    corners: Vec<(usize, f64)>,
    hidden_density: Vec<f64>,
    hidden_albedo: Vec<f64>,
}

/// The field over a parameter vector laid out by [`ParamLayout`].
pub struct ReferenceField<'a> {
    pub config: &'a FieldConfig,
    pub layout: ParamLayout,
    pub params: &'a [f64],
}

fn softplus(x: f64) -> f64 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl<'a> ReferenceField<'a> {
    pub fn new(config: &'a FieldConfig, params: &'a [f64]) -> Self {
        let layout = config.layout();
        assert_eq!(params.len(), layout.len as usize, "parameter count");
        Self {
            config,
            layout,
            params,
        }
    }

    /// Blob density bias at world position `p`.
    pub fn blob(&self, p: [f64; 3]) -> f64 {
        let r = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
        self.config.blob_scale as f64 * (1.0 - r / self.config.blob_std as f64)
    }

    pub fn eval(&self, p: [f64; 3]) -> FieldSample {
        let c = self.config;
        let f = c.features_per_level as usize;
        let radius = c.radius as f64;
        let u: Vec<f64> = p
            .iter()
            .map(|x| ((x / radius + 1.0) * 0.5).clamp(0.0, 1.0))
            .collect();
        let mut features = Vec::with_capacity(c.encoding_width() as usize);
        let mut corners = Vec::with_capacity(8 * c.levels as usize);
        for level in &self.layout.levels {
            let res = level.resolution;
            let mut cell = [0u32; 3];
            let mut frac = [0f64; 3];
            for a in 0..3 {
                let g = u[a] * res as f64;
                cell[a] = (g.floor() as u32).min(res - 1);
                frac[a] = g - cell[a] as f64;
            }
            let mut acc = vec![0.0; f];
            for corner in 0..8u32 {
                let mut v = cell;
                let mut w = 1.0;
                for a in 0..3 {
                    if corner >> a & 1 == 1 {
                        v[a] += 1;
                        w *= frac[a];
                    } else {
                        w *= 1.0 - frac[a];
                    }
                }
                let entry = level.offset + vertex_index(v, res, level.size, level.dense);
                let base = (entry as usize) * f;
                for (k, a) in acc.iter_mut().enumerate() {
                    *a += w * self.params[base + k];
                }
                corners.push((base, w));
            }
            features.extend(acc);
        }
        let (pre_density, margin_density) = self.pre_activations(self.layout.density_w1, &features);
        let (pre_albedo, margin_albedo) = self.pre_activations(self.layout.albedo_w1, &features);
        let kink_margin = margin_density.min(margin_albedo);
        let relu = |pre: Vec<f64>| pre.into_iter().map(|h| h.max(0.0)).collect::<Vec<_>>();
        let hidden_density = relu(pre_density);
        let hidden_albedo = relu(pre_albedo);
        let w2 = self.layout.density_w2 as usize;
        let raw: f64 = hidden_density
            .iter()
            .enumerate()
            .map(|(j, h)| self.params[w2 + j] * h)
            .sum();
        let pre = raw + self.blob(p);
        let n = c.hidden as usize;
        let a2 = self.layout.albedo_w2 as usize;
        let rgb = std::array::from_fn(|ch| {
            let a: f64 = hidden_albedo
                .iter()
                .enumerate()
                .map(|(j, h)| self.params[a2 + ch * n + j] * h)
                .sum();
            sigmoid(a)
        });
        FieldSample {
            sigma: softplus(pre),
            rgb,
            dsigma_draw: sigmoid(pre),
            kink_margin,
            features,
            corners,
            hidden_density,
            hidden_albedo,
        }
    }

    /// W x for the hidden × width matrix at `offset`, and the smallest |(W x)ⱼ| / Σₖ|Wⱼₖxₖ|.
    fn pre_activations(&self, offset: u32, x: &[f64]) -> (Vec<f64>, f64) {
        let width = x.len();
        let mut margin = f64::INFINITY;
        let pre = (0..self.config.hidden as usize)
            .map(|j| {
                let row = &self.params[offset as usize + j * width..][..width];
                let h: f64 = row.iter().zip(x).map(|(w, v)| w * v).sum();
                let scale: f64 = row.iter().zip(x).map(|(w, v)| (w * v).abs()).sum();
                margin = margin.min(h.abs() / scale.max(f64::MIN_POSITIVE));
                h
            })
            .collect();
        (pre, margin)
    }

    /// Adds the gradient of `g_sigma·σ + g_rgb·rgb` at sample `s` to `grads`.
    pub fn backward(&self, s: &FieldSample, g_sigma: f64, g_rgb: [f64; 3], grads: &mut [f64]) {
        let width = s.features.len();
        let n = self.config.hidden as usize;
        let l = &self.layout;
        let mut g_features = vec![0.0; width];
        // Density: raw = w2 · relu(W1 f).
        let g_raw = g_sigma * s.dsigma_draw;
        for j in 0..n {
            let h = s.hidden_density[j];
            grads[l.density_w2 as usize + j] += g_raw * h;
            if h > 0.0 {
                let g_h = g_raw * self.params[l.density_w2 as usize + j];
                let row = l.density_w1 as usize + j * width;
                for k in 0..width {
                    grads[row + k] += g_h * s.features[k];
                    g_features[k] += g_h * self.params[row + k];
                }
            }
        }
        // Albedo: rgb = sigmoid(W2 relu(W1 f)).
        let g_pre: [f64; 3] = std::array::from_fn(|c| g_rgb[c] * s.rgb[c] * (1.0 - s.rgb[c]));
        for j in 0..n {
            let h = s.hidden_albedo[j];
            let mut g_h = 0.0;
            for (c, g) in g_pre.iter().enumerate() {
                let w = l.albedo_w2 as usize + c * n + j;
                grads[w] += g * h;
                g_h += g * self.params[w];
            }
            if h > 0.0 {
                let row = l.albedo_w1 as usize + j * width;
                for k in 0..width {
                    grads[row + k] += g_h * s.features[k];
                    g_features[k] += g_h * self.params[row + k];
                }
            }
        }
        // Hash grid: the trilinear weights scatter each level's feature gradient.
        let f = self.config.features_per_level as usize;
        for (i, &(base, w)) in s.corners.iter().enumerate() {
            let level = i / 8;
            for k in 0..f {
                grads[base + k] += w * g_features[level * f + k];
            }
        }
    }

    /// Matrix (rows × cols at `offset`) times `x`, then ReLU.
    fn relu_layer(&self, offset: u32, rows: usize, x: &[f64]) -> Vec<f64> {
        (0..rows)
            .map(|j| {
                let row = &self.params[offset as usize + j * x.len()..][..x.len()];
                row.iter().zip(x).map(|(w, v)| w * v).sum::<f64>().max(0.0)
            })
            .collect()
    }

    /// The neural background's activations along `ray`: (SH terms, hidden 1, hidden 2, rgb).
    fn background_activations(&self, ray: &Ray, n: usize) -> BackgroundActivations {
        let l = &self.layout;
        let sh = sh9(ray.dir).to_vec();
        let h1 = self.relu_layer(l.background_w1, n, &sh);
        let h2 = self.relu_layer(l.background_w2, n, &h1);
        let rgb = std::array::from_fn(|c| {
            let row = &self.params[l.background_w3 as usize + c * n..][..n];
            sigmoid(row.iter().zip(&h2).map(|(w, h)| w * h).sum())
        });
        BackgroundActivations { sh, h1, h2, rgb }
    }

    pub fn background(&self, ray: &Ray) -> [f64; 3] {
        match self.config.background {
            Background::Solid(c) => c.map(f64::from),
            Background::Neural { hidden } => self.background_activations(ray, hidden as usize).rgb,
        }
    }

    /// Adds the gradient of `g·background(ray)` to `grads` (nothing for a solid colour).
    pub fn background_backward(&self, ray: &Ray, g: [f64; 3], grads: &mut [f64]) {
        let Background::Neural { hidden } = self.config.background else {
            return;
        };
        let n = hidden as usize;
        let l = &self.layout;
        let a = self.background_activations(ray, n);
        let g_out: [f64; 3] = std::array::from_fn(|c| g[c] * a.rgb[c] * (1.0 - a.rgb[c]));
        let mut g_h2 = vec![0.0; n];
        for (c, go) in g_out.iter().enumerate() {
            for (j, (g, h)) in g_h2.iter_mut().zip(&a.h2).enumerate() {
                let w = l.background_w3 as usize + c * n + j;
                grads[w] += go * h;
                *g += go * self.params[w];
            }
        }
        let mut g_h1 = vec![0.0; n];
        for j in (0..n).filter(|&j| a.h2[j] > 0.0) {
            for (k, (g, h)) in g_h1.iter_mut().zip(&a.h1).enumerate() {
                let w = l.background_w2 as usize + j * n + k;
                grads[w] += g_h2[j] * h;
                *g += g_h2[j] * self.params[w];
            }
        }
        for k in (0..n).filter(|&k| a.h1[k] > 0.0) {
            for (i, s) in a.sh.iter().enumerate() {
                grads[l.background_w1 as usize + k * a.sh.len() + i] += g_h1[k] * s;
            }
        }
    }
}

struct BackgroundActivations {
    sh: Vec<f64>,
    h1: Vec<f64>,
    h2: Vec<f64>,
    rgb: [f64; 3],
}

/// Real spherical harmonics of bands 0–2 of a unit direction (tiny-cuda-nn's basis).
pub fn sh9(d: [f64; 3]) -> [f64; 9] {
    let [x, y, z] = d;
    [
        0.282_094_791_773_878_14,
        -0.488_602_511_902_919_9 * y,
        0.488_602_511_902_919_9 * z,
        -0.488_602_511_902_919_9 * x,
        1.092_548_430_592_079_2 * x * y,
        -1.092_548_430_592_079_2 * y * z,
        0.946_174_695_757_559_9 * z * z - 0.315_391_565_252_52,
        -1.092_548_430_592_079_2 * x * z,
        0.546_274_215_296_039_6 * (x * x - y * y),
    ]
}

/// What one ray renders to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RayOutput {
    /// Composited over the background.
    pub rgb: [f64; 3],
    pub opacity: f64,
    /// Opacity-weighted distance along the ray (0 where the ray sees nothing).
    pub depth: f64,
    /// Field samples evaluated before the ray left the field or terminated early.
    pub samples: u32,
}

/// One sample of a ray: (t, δ, position).
pub type Sample = (f64, f64, [f64; 3]);

/// The samples of `ray` the renderer uses: `(t, δ, position)` in order, skipping empty cells.
pub fn samples(
    field: &ReferenceField,
    ray: &Ray,
    settings: &RenderSettings,
    occupancy: Option<&OccupancyGrid>,
    ray_index: u32,
) -> Vec<Sample> {
    let radius = field.config.radius as f64;
    let Some((near, far)) = box_hits(ray, radius) else {
        return vec![];
    };
    let delta = render_step(radius, settings.samples_per_ray);
    let offset = jitter(settings, ray_index) as f64;
    (0..settings.samples_per_ray)
        .map(|k| near + (k as f64 + offset) * delta)
        .take_while(|&t| t < far)
        .map(|t| (t, delta, ray.at(t)))
        .filter(|(_, _, p)| occupancy.is_none_or(|o| o.occupied(*p, radius)))
        .collect()
}

/// The colour behind the field along `ray` in a render with these settings.
fn background(field: &ReferenceField, ray: &Ray, settings: &RenderSettings) -> [f64; 3] {
    match settings.background {
        Some(c) => c.map(f64::from),
        None => field.background(ray),
    }
}

/// Front-to-back compositing with early termination.
pub fn render_ray(
    field: &ReferenceField,
    ray: &Ray,
    settings: &RenderSettings,
    occupancy: Option<&OccupancyGrid>,
    ray_index: u32,
) -> RayOutput {
    let marched = samples(field, ray, settings, occupancy, ray_index);
    composite(field, ray, settings, &marched)
}

/// Compositing of given samples of `ray`, front to back with early termination.
pub fn composite(
    field: &ReferenceField,
    ray: &Ray,
    settings: &RenderSettings,
    marched: &[Sample],
) -> RayOutput {
    let mut t_acc = 1.0;
    let mut rgb = [0.0; 3];
    let mut depth = 0.0;
    let mut evaluated = 0;
    for &(t, delta, p) in marched {
        let s = field.eval(p);
        evaluated += 1;
        let alpha = 1.0 - (-s.sigma * delta).exp();
        let w = t_acc * alpha;
        for (acc, c) in rgb.iter_mut().zip(s.rgb) {
            *acc += w * c;
        }
        depth += w * t;
        t_acc *= 1.0 - alpha;
        if t_acc < settings.early_stop as f64 {
            break;
        }
    }
    let bg = background(field, ray, settings);
    RayOutput {
        rgb: std::array::from_fn(|c| rgb[c] + t_acc * bg[c]),
        opacity: 1.0 - t_acc,
        depth,
        samples: evaluated,
    }
}

/// `render_ray` over a batch on every core; ray i of the batch is the ray with index i.
pub fn render_rays(
    field: &ReferenceField,
    rays: &[Ray],
    settings: &RenderSettings,
    occupancy: Option<&OccupancyGrid>,
) -> Vec<RayOutput> {
    rays.par_iter()
        .enumerate()
        .map(|(i, ray)| render_ray(field, ray, settings, occupancy, i as u32))
        .collect()
}

/// The gradient of Σᵢ gᵢ·(rgbᵢ, opacityᵢ) over a batch rendered by `render_rays`, on every
/// core.
pub fn backward_rays(
    field: &ReferenceField,
    rays: &[Ray],
    settings: &RenderSettings,
    occupancy: Option<&OccupancyGrid>,
    outputs: &[RayOutput],
    grad_color: &[[f64; 4]],
) -> Vec<f64> {
    backward_batch(field, rays, settings, outputs, grad_color, |i| {
        Cow::Owned(samples(field, &rays[i], settings, occupancy, i as u32))
    })
}

/// As [`backward_rays`] for rays composited from given samples (see [`composite`]).
pub fn backward_composited(
    field: &ReferenceField,
    rays: &[Ray],
    settings: &RenderSettings,
    marched: &[Vec<Sample>],
    outputs: &[RayOutput],
    grad_color: &[[f64; 4]],
) -> Vec<f64> {
    backward_batch(field, rays, settings, outputs, grad_color, |i| {
        Cow::Borrowed(&marched[i])
    })
}

/// One gradient buffer per thread's share of the rays (not per ray: a full-size field has
/// millions of parameters), summed.
fn backward_batch<'a>(
    field: &ReferenceField,
    rays: &[Ray],
    settings: &RenderSettings,
    outputs: &[RayOutput],
    grad_color: &[[f64; 4]],
    samples_of: impl Fn(usize) -> Cow<'a, [Sample]> + Sync,
) -> Vec<f64> {
    let len = field.params.len();
    let share = rays.len().div_ceil(rayon::current_num_threads()).max(1);
    let indices: Vec<usize> = (0..rays.len()).collect();
    indices
        .par_chunks(share)
        .map(|chunk| {
            let mut grads = vec![0.0; len];
            for &i in chunk {
                let g = grad_color[i];
                let (rgb, opacity) = ([g[0], g[1], g[2]], g[3]);
                backward_samples(
                    field,
                    &rays[i],
                    settings,
                    &samples_of(i),
                    &outputs[i],
                    rgb,
                    opacity,
                    &mut grads,
                );
            }
            grads
        })
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            a
        })
        .unwrap_or_else(|| vec![0.0; len])
}

/// Adds d(g_rgb·rgb + g_opacity·opacity)/d(params) for one ray to `grads`, given the ray's
/// forward output (the same samples are recomputed, nothing per sample was stored).
#[allow(clippy::too_many_arguments)]
pub fn backward_ray(
    field: &ReferenceField,
    ray: &Ray,
    settings: &RenderSettings,
    occupancy: Option<&OccupancyGrid>,
    ray_index: u32,
    out: &RayOutput,
    g_rgb: [f64; 3],
    g_opacity: f64,
    grads: &mut [f64],
) {
    let marched = samples(field, ray, settings, occupancy, ray_index);
    backward_samples(field, ray, settings, &marched, out, g_rgb, g_opacity, grads);
}

/// [`backward_ray`] for a ray composited from given samples.
#[allow(clippy::too_many_arguments)]
fn backward_samples(
    field: &ReferenceField,
    ray: &Ray,
    settings: &RenderSettings,
    marched: &[Sample],
    out: &RayOutput,
    g_rgb: [f64; 3],
    g_opacity: f64,
    grads: &mut [f64],
) {
    let bg = background(field, ray, settings);
    let t_final = 1.0 - out.opacity;
    // Foreground colour Σ wᵢcᵢ, and the part of dL/dσ every sample shares.
    let fg: [f64; 3] = std::array::from_fn(|c| out.rgb[c] - t_final * bg[c]);
    let g_bg: f64 = (0..3).map(|c| g_rgb[c] * bg[c]).sum();
    let shared = (g_opacity - g_bg) * t_final;
    let mut t_acc = 1.0;
    let mut prefix = [0.0; 3];
    for &(_, delta, p) in marched {
        let s = field.eval(p);
        let alpha = 1.0 - (-s.sigma * delta).exp();
        let w = t_acc * alpha;
        let t_next = t_acc * (1.0 - alpha);
        let mut g_sigma = shared;
        for c in 0..3 {
            prefix[c] += w * s.rgb[c];
            // Colour still to come after this sample: Σ_{j>i} wⱼcⱼ.
            let rest = fg[c] - prefix[c];
            g_sigma += g_rgb[c] * (t_next * s.rgb[c] - rest);
        }
        let g_color = g_rgb.map(|g| g * w);
        field.backward(&s, g_sigma * delta, g_color, grads);
        t_acc = t_next;
        if t_acc < settings.early_stop as f64 {
            break;
        }
    }
    if settings.background.is_none() {
        field.background_backward(ray, g_rgb.map(|g| g * t_final), grads);
    }
}
