//! Score distillation from MVDream into the 3D field: the annealed schedules, the multi-view
//! guidance that turns the UNet's predictions into a gradient on latents, and the
//! differentiable path from rendered views to latents through the VAE encoder.

pub mod assets;
pub mod guidance;
pub mod latents;
pub mod refine;
pub mod run;
pub mod schedule;
pub mod step;
