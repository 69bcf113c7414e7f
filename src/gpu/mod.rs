//! wgpu: the device, WGSL sources, buffers, kernel launches, GPU prefix sums, the field's
//! compute kernels, the differentiable mesh rasteriser and the mesh preview rasteriser.

pub mod buffers;
pub mod context;
pub mod field;
pub mod launch;
pub mod mesh_preview;
pub mod raster;
pub mod scan;
pub mod shader;
pub mod surface;

pub use context::GpuContext;
pub use field::{AdamConfig, GpuField, Rendered};
