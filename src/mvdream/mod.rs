//! MVDream: the multi-view UNet (our SD UNet in multi-view mode, with `camera_embed`), loaded
//! from the official checkpoint's names and architecture, with the VAE and text encoder it
//! ships.

pub mod checkpoint;
pub mod config;
pub mod keys;
pub mod weights;
pub mod yaml_config;

pub use checkpoint::{LoadedMvdream, MvdreamArchitecture, MvdreamModel};
pub use config::MvUNetParams;
