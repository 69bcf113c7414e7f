//! Noise schedule, ε/v/x₀ conversions and DDIM sampling with classifier-free guidance.

pub mod ddim;
pub mod schedule;

pub use ddim::{apply_guidance, guided_ddim, sample_with_guidance, DdimSampler};
pub use schedule::{NoiseSchedule, PredictionType};
