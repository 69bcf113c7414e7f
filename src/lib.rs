//! dream3d: prompt distributions (DreamDistribution) learned from reference images, sampled as
//! 2D images and distilled into 3D assets with MVDream. See `ARCHITECTURE.md` for the map.

pub mod camera;
pub mod conditioning;
pub mod device;
pub mod diffusion;
pub mod distill;
pub mod dmtet;
pub mod error;
pub mod eval;
pub mod field;
pub mod files;
pub mod fit;
pub mod gpu;
pub mod imaging;
pub mod manifest;
pub mod mesh;
pub mod models;
pub mod mvdream;
pub mod nn;
pub mod optim;
pub mod prompt;
pub mod random;
pub mod raster;
pub mod run_dir;
pub mod sample;
pub mod shard;
pub mod stable_diffusion;
pub mod tokenizer;
pub mod turntable;
pub mod weights;

pub use error::{Error, Result};
