//! How rays are sampled, shared by the kernels and the reference: clipping to the bounding
//! sphere, stratified steps of fixed length, the occupancy grid that skips empty space.

use crate::camera::Ray;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderSettings {
    /// Steps across the bounding sphere's diameter (a ray through the centre gets them all).
    pub samples_per_ray: u32,
    /// A ray stops once its transmittance falls below this.
    pub early_stop: f32,
    /// Seed of the per-ray random step offset; `None` puts samples mid-step (evaluation).
    pub stratified_seed: Option<u32>,
    /// A solid colour that replaces the field's background in this render (threestudio's
    /// random background augmentation); the background then gets no gradient.
    pub background: Option<[f32; 3]>,
}

impl Default for RenderSettings {
    fn default() -> Self {
        Self {
            samples_per_ray: 512,
            early_stop: 1e-4,
            stratified_seed: None,
            background: None,
        }
    }
}

/// PCG hash (Jarzynski & Olano 2020): a well-mixed u32 from a u32, identical in WGSL.
pub fn pcg_hash(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// The offset in [0, 1) of ray `index`'s samples within their steps.
pub fn jitter(settings: &RenderSettings, index: u32) -> f32 {
    match settings.stratified_seed {
        Some(seed) => (pcg_hash(index ^ pcg_hash(seed)) >> 8) as f32 / (1u32 << 24) as f32,
        None => 0.5,
    }
}

/// Where the ray is inside the sphere of `radius` about the origin, from no earlier than its
/// origin: `(near, far)`, or `None` when it misses.
pub fn sphere_hits(ray: &Ray, radius: f64) -> Option<(f64, f64)> {
    let (o, d) = (ray.origin, ray.dir);
    let b: f64 = (0..3).map(|a| o[a] * d[a]).sum();
    let c: f64 = (0..3).map(|a| o[a] * o[a]).sum::<f64>() - radius * radius;
    let disc = b * b - c;
    if disc <= 0.0 {
        return None;
    }
    let root = disc.sqrt();
    let far = -b + root;
    (far > 0.0).then(|| ((-b - root).max(0.0), far))
}

/// Cells per side of the occupancy grid.
pub const OCCUPANCY_RESOLUTION: u32 = 32;

/// A coarse grid over the field's box marking where there is matter; samples in empty cells
/// are skipped. Cells hold an exponential moving average of σ·δ (nerfacc's occupancy value).
#[derive(Debug, Clone, PartialEq)]
pub struct OccupancyGrid {
    pub values: Vec<f32>,
    /// 1 where occupied (one u32 per cell, as the kernels read it).
    pub bits: Vec<u32>,
}

impl Default for OccupancyGrid {
    /// Everything occupied: nothing is skipped until the first update.
    fn default() -> Self {
        let n = OCCUPANCY_RESOLUTION.pow(3) as usize;
        Self {
            values: vec![f32::INFINITY; n],
            bits: vec![1; n],
        }
    }
}

impl OccupancyGrid {
    /// The cell holding world position `p`.
    pub fn cell(p: [f64; 3], radius: f64) -> usize {
        let n = OCCUPANCY_RESOLUTION;
        let c = p.map(|x| {
            let u = ((x / radius + 1.0) * 0.5).clamp(0.0, 1.0);
            ((u * n as f64) as u32).min(n - 1)
        });
        (c[0] + c[1] * n + c[2] * n * n) as usize
    }

    pub fn occupied(&self, p: [f64; 3], radius: f64) -> bool {
        self.bits[Self::cell(p, radius)] != 0
    }

    /// values ← max(decay·values, fresh); occupied where the value exceeds
    /// min(threshold, mean value), as nerfacc's `OccGridEstimator`.
    pub fn update(&mut self, fresh: &[f32], decay: f32, threshold: f32) {
        for (v, f) in self.values.iter_mut().zip(fresh) {
            *v = if v.is_finite() {
                (*v * decay).max(*f)
            } else {
                *f
            };
        }
        let mean = self.values.iter().map(|&v| v as f64).sum::<f64>() / self.values.len() as f64;
        let cut = (threshold as f64).min(mean);
        for (b, v) in self.bits.iter_mut().zip(&self.values) {
            *b = u32::from(*v as f64 > cut);
        }
    }

    pub fn occupied_fraction(&self) -> f64 {
        self.bits.iter().filter(|&&b| b != 0).count() as f64 / self.bits.len() as f64
    }
}
