//! What changes over a distillation run (threestudio's conventions): the diffusion timestep
//! range, annealed linearly, and the render size, switched at milestones.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// A value ramped linearly from `start` at `start_step` to `end` at `end_step`, constant
/// outside (threestudio's `[start_step, start, end, end_step]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ramp {
    pub start_step: u64,
    pub start: f64,
    pub end: f64,
    pub end_step: u64,
}

impl Ramp {
    pub fn at(&self, step: u64) -> f64 {
        let span = self.end_step.saturating_sub(self.start_step).max(1) as f64;
        let progress = ((step as f64 - self.start_step as f64) / span).clamp(0.0, 1.0);
        self.start + (self.end - self.start) * progress
    }
}

/// The range diffusion timesteps are drawn from, as fractions of the training steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimestepSchedule {
    pub min: Ramp,
    pub max: Ramp,
}

impl Default for TimestepSchedule {
    /// MVDream-threestudio's `mvdream-sd21.yaml`: [0.98, 0.98] → [0.02, 0.50] by step 8000.
    fn default() -> Self {
        Self {
            min: Ramp {
                start_step: 0,
                start: 0.98,
                end: 0.02,
                end_step: 8000,
            },
            max: Ramp {
                start_step: 0,
                start: 0.98,
                end: 0.50,
                end_step: 8000,
            },
        }
    }
}

impl TimestepSchedule {
    /// The inclusive timestep range at `step` for a model trained on `train_steps` timesteps
    /// (`int(train_steps · fraction)`, as threestudio truncates).
    pub fn range(&self, step: u64, train_steps: usize) -> (usize, usize) {
        let at = |r: &Ramp| (train_steps as f64 * r.at(step)) as usize;
        let (lo, hi) = (at(&self.min), at(&self.max));
        (lo.min(train_steps - 1), hi.clamp(lo, train_steps - 1))
    }

    /// One timestep for every view of this step.
    pub fn sample(&self, step: u64, train_steps: usize, rng: &mut impl Rng) -> usize {
        let (lo, hi) = self.range(step, train_steps);
        rng.random_range(lo..=hi)
    }
}

/// Render size and views per step, switched at milestones (threestudio's
/// `resolution_milestones` with `width`/`height`/`batch_size` lists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stages {
    /// Steps at which the next stage starts.
    pub milestones: Vec<u64>,
    /// Square render size per stage.
    pub sizes: Vec<u32>,
    /// Views rendered per step per stage (a multiple of the views per object).
    pub batch: Vec<usize>,
}

impl Default for Stages {
    /// 64² with 2 objects × 4 views until step 5000, then 256² with 1 × 4.
    fn default() -> Self {
        Self {
            milestones: vec![5000],
            sizes: vec![64, 256],
            batch: vec![8, 4],
        }
    }
}

impl Stages {
    /// The stage index at `step`.
    pub fn stage(&self, step: u64) -> usize {
        self.milestones.iter().filter(|&&m| step >= m).count()
    }

    pub fn size(&self, step: u64) -> u32 {
        self.sizes[self.stage(step)]
    }

    pub fn batch(&self, step: u64) -> usize {
        self.batch[self.stage(step)]
    }

    /// Every list has one entry per stage and each batch is whole groups of `views`.
    pub fn check(&self, views: usize) -> Result<(), String> {
        let stages = self.milestones.len() + 1;
        if self.sizes.len() != stages || self.batch.len() != stages {
            return Err(format!(
                "stages: {} milestones need {stages} sizes and {stages} batch sizes",
                self.milestones.len()
            ));
        }
        if !self.milestones.windows(2).all(|w| w[0] < w[1]) {
            return Err("stages: milestones must increase".into());
        }
        if let Some(b) = self.batch.iter().find(|&&b| b == 0 || b % views != 0) {
            return Err(format!(
                "stages: batch {b} is not a positive multiple of the {views} views per object"
            ));
        }
        if let Some(s) = self.sizes.iter().find(|&&s| s < 8) {
            return Err(format!("stages: render size {s} is below 8 pixels"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestep_ranges_follow_threestudio() {
        let s = TimestepSchedule::default();
        // Values quoted in the MVDream-threestudio notes.
        assert_eq!(s.range(0, 1000), (980, 980));
        assert_eq!(s.range(4000, 1000), (500, 740));
        assert_eq!(s.range(8000, 1000), (20, 500));
        assert_eq!(s.range(12_000, 1000), (20, 500));
        // int() truncates as in Python: max is 0.9199999999999999 at step 1000, so 919.
        assert_eq!(s.range(1000, 1000), (860, 919));
        let mut rng = rand::rng();
        for _ in 0..100 {
            let t = s.sample(4000, 1000, &mut rng);
            assert!((500..=740).contains(&t));
        }
    }

    #[test]
    fn stages_switch_at_milestones() {
        let s = Stages::default();
        assert_eq!((s.size(0), s.batch(0)), (64, 8));
        assert_eq!((s.size(4999), s.batch(4999)), (64, 8));
        assert_eq!((s.size(5000), s.batch(5000)), (256, 4));
        assert!(s.check(4).is_ok());
        let bad = Stages {
            batch: vec![6, 4],
            ..Stages::default()
        };
        assert!(bad.check(4).unwrap_err().contains("batch 6"));
        let short = Stages {
            sizes: vec![64],
            ..Stages::default()
        };
        assert!(short.check(4).is_err());
    }
}
