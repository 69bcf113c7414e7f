//! The wgpu device dream3d computes on: headless, any backend, chosen by name when asked.

use crate::error::{Error, Result};

/// Picks the adapter whose name contains this text (case-insensitive), e.g. `llvmpipe`.
pub const ADAPTER_ENV: &str = "DREAM3D_ADAPTER";

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: wgpu::AdapterInfo,
    /// `atomicAdd` on f32 in storage buffers; otherwise a compare-exchange loop is used.
    pub float_atomics: bool,
    /// The smallest subgroup size, where the device has subgroup operations (the field's
    /// backward then sums across the hidden units with them); `None` turns them off.
    pub subgroup_min_size: Option<u32>,
    /// Workgroup memory a kernel may use, in bytes.
    pub max_workgroup_memory: u32,
    /// Largest storage-buffer binding the device allows.
    pub max_binding: u64,
    /// Fill every new buffer with noise (tests: kernels must not rely on zeroed memory).
    pub poison_buffers: bool,
}

impl GpuContext {
    /// The adapter named by `DREAM3D_ADAPTER`, else the best one wgpu offers (a discrete GPU
    /// before an integrated one before a software rasteriser).
    pub fn new() -> Result<Self> {
        Self::with_adapter(std::env::var(ADAPTER_ENV).ok().as_deref())
    }

    pub fn with_adapter(name: Option<&str>) -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let score = |a: &wgpu::Adapter| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Cpu => 3,
            wgpu::DeviceType::Other => 4,
        };
        let names: Vec<String> = adapters
            .iter()
            .map(|a| format!("{} ({:?})", a.get_info().name, a.get_info().backend))
            .collect();
        let adapter = match name {
            Some(want) => adapters
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&want.to_lowercase()))
                .ok_or_else(|| {
                    Error::Gpu(format!(
                        "no GPU adapter matches {ADAPTER_ENV}={want}; available: {}",
                        if names.is_empty() { "none".into() } else { names.join(", ") }
                    ))
                })?,
            None => adapters.into_iter().min_by_key(score).ok_or_else(|| {
                Error::Gpu(
                    "no GPU adapter found: install a Vulkan driver (for a software one on Debian/Ubuntu: apt install mesa-vulkan-drivers libvulkan1) or a Metal/DX12-capable GPU driver".into(),
                )
            })?,
        };
        let float_atomics = adapter
            .features()
            .contains(wgpu::Features::SHADER_FLOAT32_ATOMIC);
        let limits = adapter.limits();
        let subgroups = adapter.features().contains(wgpu::Features::SUBGROUP);
        let required_features =
            adapter.features() & (wgpu::Features::SHADER_FLOAT32_ATOMIC | wgpu::Features::SUBGROUP);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("dream3d"),
            required_features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Gpu(format!("opening {}: {e}", adapter.get_info().name)))?;
        Ok(Self {
            device,
            queue,
            adapter: adapter.get_info(),
            float_atomics,
            subgroup_min_size: subgroups.then_some(adapter.get_info().subgroup_min_size),
            max_workgroup_memory: limits.max_compute_workgroup_storage_size,
            max_binding: limits.max_storage_buffer_binding_size,
            poison_buffers: false,
        })
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))
    }

    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}){}{}",
            self.adapter.name,
            self.adapter.backend,
            self.adapter.device_type,
            if self.float_atomics {
                ""
            } else {
                ", f32 atomics emulated"
            },
            if self.subgroup_min_size.is_some() {
                ""
            } else {
                ", no subgroups"
            }
        )
    }
}
