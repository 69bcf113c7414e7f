//! MVDream: the multi-view UNet (our SD UNet in multi-view mode, with `camera_embed`) loaded
//! from the official checkpoint's names and architecture.

pub mod config;
pub mod weights;

pub use config::MvUNetParams;
