//! wgpu: the device, WGSL sources, buffers, the field's compute kernels and the mesh preview
//! rasteriser.

pub mod buffers;
pub mod context;
pub mod field;
pub mod mesh_preview;
pub mod shader;

pub use context::GpuContext;
pub use field::{AdamConfig, GpuField, Rendered};
