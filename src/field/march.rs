//! How rays are sampled, shared by the kernels and the reference: clipping to the bounding
//! sphere, stratified steps of fixed length, the occupancy grid that skips empty space.

use crate::camera::Ray;
use rand::Rng;

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
    /// where the value exceeds min(threshold, mean of the positive values), as nerfacc's
    /// `OccGridEstimator`.
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
        let positive: Vec<f64> = self
            .values
            .iter()
            .filter(|&&v| v > 0.0)
            .map(|&v| v as f64)
            .collect();
        let mean = positive.iter().sum::<f64>() / positive.len().max(1) as f64;
        let cut = if positive.is_empty() {
            threshold as f64
        } else {
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
    fn the_threshold_is_capped_by_the_mean_of_the_positive_cells() {
        // Eight cells at 0.004, the rest empty: the mean over positive cells (0.004) is the
        // cut, not the mean over all cells (≈ 10⁻⁶), so none of them is occupied.
        let grid = grid_with(|c| if c < 8 { 0.004 } else { 0.0 });
        assert_eq!(grid.occupied_fraction(), 0.0);
        // Half the positive cells above their mean.
        let grid = grid_with(|c| match c {
            0..4 => 0.002,
            4..8 => 0.006,
            _ => 0.0,
        });
        assert_eq!(grid.bits.iter().filter(|&&b| b != 0).count(), 4);
        assert!(grid.bits[4..8].iter().all(|&b| b == 1));
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
