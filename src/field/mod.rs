//! The 3D field distilled by `generate`: its architecture and parameter layout (`config`), ray
//! sampling (`march`), and the f64 reference implementation the GPU kernels are tested against.

pub mod config;
pub mod march;
pub mod reference;

pub use config::{Background, FieldConfig, GridLevel, ParamLayout};
pub use march::{OccupancyGrid, RenderSettings};
