//! Choosing the compute device and dtype.

use candle_core::{DType, Device};

/// The best available device: CUDA when compiled in and present, Metal likewise, else the CPU.
pub fn best_device() -> candle_core::Result<Device> {
    if candle_core::utils::cuda_is_available() {
        return Device::new_cuda(0);
    }
    if candle_core::utils::metal_is_available() {
        return Device::new_metal(0);
    }
    Ok(Device::Cpu)
}

/// Frozen-weight dtype: f32 on the CPU (candle's half-precision CPU kernels are slow),
/// f16 on GPUs.
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::F16
    }
}
