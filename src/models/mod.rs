//! The Stable Diffusion networks, built from their diffusers `config.json` files.

mod blocks;
pub mod clip_text;
pub mod config;
mod transformer;
pub mod unet;
pub mod vae;

pub use clip_text::{ClipTextConfig, ClipTextModel};
pub use unet::{UNet2DConditionModel, UNetConfig};
pub use vae::{AutoencoderKL, LatentDist, VaeConfig};
