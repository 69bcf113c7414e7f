//! wgpu compute: the device, WGSL sources, buffers, and the field's kernels.

pub mod buffers;
pub mod context;
pub mod field;
pub mod shader;

pub use context::GpuContext;
pub use field::{AdamConfig, GpuField, Rendered};
