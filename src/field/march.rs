//! How rays are sampled, shared by the kernels and the reference (threestudio's rules with
//! nerfacc's estimator): clipping to the field's box, stratified steps of fixed length, the
//! occupancy grid that skips empty space.

use crate::camera::Ray;
use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderSettings {
    /// Steps along the box's diagonal (threestudio's `num_samples_per_ray`): the step is
    /// [`render_step`].
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

/// threestudio's `render_step_size` is this times the box's side over the samples per ray.
pub const STEP_FACTOR: f64 = 1.732;

/// The distance between samples in a box of half-size `radius`.
pub fn render_step(radius: f64, samples_per_ray: u32) -> f64 {
    STEP_FACTOR * 2.0 * radius / samples_per_ray as f64
}

/// Where the ray is inside the box [−radius, radius]³, from no earlier than its origin
/// (nerfacc's `roi_aabb` clipping): `(near, far)`, or `None` when it misses. Direction
/// components below 10⁻⁹ count as 10⁻⁹, as in the kernels.
pub fn box_hits(ray: &Ray, radius: f64) -> Option<(f64, f64)> {
    let mut near = 0f64;
    let mut far = f64::INFINITY;
    for a in 0..3 {
        let d = if ray.dir[a].abs() < 1e-9 {
            1e-9
        } else {
            ray.dir[a]
        };
        let t0 = (-radius - ray.origin[a]) / d;
        let t1 = (radius - ray.origin[a]) / d;
        near = near.max(t0.min(t1));
        far = far.min(t0.max(t1));
    }
    (near < far).then_some((near, far))
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

    /// The cells nerfacc re-evaluates after its warm-up: a quarter of all cells drawn
    /// uniformly and as many drawn from the occupied ones (every occupied cell when there are
    /// fewer), with replacement; true where a cell was drawn.
    pub fn sample_cells(&self, rng: &mut impl Rng) -> Vec<bool> {
        let cells = self.bits.len();
        let quarter = cells / 4;
        let mut chosen = vec![false; cells];
        for _ in 0..quarter {
            chosen[rng.random_range(0..cells)] = true;
        }
        let occupied: Vec<usize> = (0..cells).filter(|&c| self.bits[c] != 0).collect();
        if occupied.len() > quarter {
            for _ in 0..quarter {
                chosen[occupied[rng.random_range(0..occupied.len())]] = true;
            }
        } else {
            occupied.iter().for_each(|&c| chosen[c] = true);
        }
        chosen
    }

    /// values ← max(decay·values, fresh) in the `chosen` cells (all when `None`); occupied
    /// where the value exceeds min(threshold, mean over the evaluated cells), nerfacc's
    /// `OccGridEstimator` rule (its mean over every cell ≥ 0; cells never evaluated yet, still
    /// at +∞, are left out).
    pub fn update(&mut self, fresh: &[f32], chosen: Option<&[bool]>, decay: f32, threshold: f32) {
        for (c, (v, f)) in self.values.iter_mut().zip(fresh).enumerate() {
            if chosen.is_some_and(|chosen| !chosen[c]) {
                continue;
            }
            *v = if v.is_finite() {
                (*v * decay).max(*f)
            } else {
                *f
            };
        }
        let evaluated: Vec<f64> = self
            .values
            .iter()
            .filter(|v| v.is_finite() && **v >= 0.0)
            .map(|&v| v as f64)
            .collect();
        let cut = if evaluated.is_empty() {
            threshold as f64
        } else {
            let mean = evaluated.iter().sum::<f64>() / evaluated.len() as f64;
            (threshold as f64).min(mean)
        };
        for (b, v) in self.bits.iter_mut().zip(&self.values) {
            *b = u32::from(*v as f64 > cut);
        }
    }

    pub fn occupied_fraction(&self) -> f64 {
        self.bits.iter().filter(|&&b| b != 0).count() as f64 / self.bits.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn grid_with(values: impl Fn(usize) -> f32) -> OccupancyGrid {
        let mut grid = OccupancyGrid::default();
        let fresh: Vec<f32> = (0..grid.values.len()).map(values).collect();
        grid.update(&fresh, None, 0.95, 0.01);
        grid
    }

    #[test]
    fn the_threshold_is_capped_by_the_mean_over_all_cells() {
        // nerfacc: thre = clamp(mean(occs[occs >= 0]), max=0.01). Eight cells at 0.004, the
        // rest empty: the mean over all cells (≈ 10⁻⁶) is the cut, so all eight are occupied
        // (the mean of the positive cells alone, 0.004, would have left none).
        let grid = grid_with(|c| if c < 8 { 0.004 } else { 0.0 });
        assert_eq!(grid.bits.iter().filter(|&&b| b != 0).count(), 8);
        // Every cell at 0.02: the mean (0.02) is above the threshold, which cuts at 0.01.
        let grid = grid_with(|c| if c % 2 == 0 { 0.02 } else { 0.005 });
        assert!(grid.bits.iter().step_by(2).all(|&b| b == 1));
        assert!(grid.bits.iter().skip(1).step_by(2).all(|&b| b == 0));
        // Half the cells at 0.002 and half at 0.006: the mean, 0.004, is the cut.
        let grid = grid_with(|c| if c % 2 == 0 { 0.002 } else { 0.006 });
        assert!(grid.bits.iter().step_by(2).all(|&b| b == 0));
        assert!(grid.bits.iter().skip(1).step_by(2).all(|&b| b == 1));
    }

    #[test]
    fn rays_are_clipped_to_the_box_and_stepped_as_threestudio() {
        use nalgebra::Vector3;
        let ray = |o: [f64; 3], d: [f64; 3]| {
            let d = Vector3::from(d).normalize();
            Ray {
                origin: o,
                dir: [d.x, d.y, d.z],
            }
        };
        // Along an axis from outside: the box's faces.
        let (near, far) = box_hits(&ray([-3.0, 0.2, 0.1], [1.0, 0.0, 0.0]), 1.0).unwrap();
        assert!((near - 2.0).abs() < 1e-12 && (far - 4.0).abs() < 1e-12);
        // Through the corners: the diagonal, 2√3, which 512 steps of 1.732·2/512 just cover.
        let (near, far) = box_hits(&ray([-2.0; 3], [1.0; 3]), 1.0).unwrap();
        assert!((far - near - 2.0 * 3f64.sqrt()).abs() < 1e-12);
        assert!(((far - near) / render_step(1.0, 512) - 512.0).abs() < 0.1);
        // From inside: from the origin on.
        let (near, far) = box_hits(&ray([0.0; 3], [0.0, 0.0, -1.0]), 1.0).unwrap();
        assert!(near == 0.0 && (far - 1.0).abs() < 1e-12);
        // Past the box, and beside it.
        assert!(box_hits(&ray([0.0, 0.0, 2.0], [0.0, 0.0, 1.0]), 1.0).is_none());
        assert!(box_hits(&ray([0.0, 1.5, 3.0], [0.0, 0.0, -1.0]), 1.0).is_none());
    }

    #[test]
    fn only_chosen_cells_decay_or_refresh() {
        let mut grid = grid_with(|_| 1.0);
        let cells = grid.values.len();
        let chosen: Vec<bool> = (0..cells).map(|c| c % 2 == 0).collect();
        grid.update(&vec![0.5; cells], Some(&chosen), 0.95, 0.01);
        assert!(grid.values.iter().step_by(2).all(|&v| v == 0.95));
        assert!(grid.values.iter().skip(1).step_by(2).all(|&v| v == 1.0));
        grid.update(&vec![2.0; cells], Some(&chosen), 0.95, 0.01);
        assert!(grid.values.iter().step_by(2).all(|&v| v == 2.0));
    }

    #[test]
    fn after_warm_up_a_quarter_uniform_and_a_quarter_occupied_cells_are_drawn() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let cells = OCCUPANCY_RESOLUTION.pow(3) as usize;
        // Few occupied cells: every one of them is drawn.
        let grid = grid_with(|c| if c % 100 == 0 { 1.0 } else { 0.0 });
        let chosen = grid.sample_cells(&mut rng);
        assert!((0..cells).step_by(100).all(|c| chosen[c]));
        // Uniform draws with replacement cover 1 − e^(−1/4) ≈ 22 % of the cells.
        let others = (0..cells).filter(|&c| c % 100 != 0 && chosen[c]).count();
        let share = others as f64 / cells as f64;
        assert!((0.20..0.24).contains(&share), "uniform share {share}");
        // Many occupied cells: a quarter of the cells' worth of draws among them.
        let grid = grid_with(|c| if c % 2 == 0 { 1.0 } else { 0.0 });
        let chosen = grid.sample_cells(&mut rng);
        let occupied = (0..cells).step_by(2).filter(|&c| chosen[c]).count();
        let share = occupied as f64 / (cells / 2) as f64;
        // 1 − e^(−1/2) ≈ 39 % from the occupied draws, plus the uniform ones landing there.
        assert!((0.45..0.58).contains(&share), "occupied share {share}");
    }
}
