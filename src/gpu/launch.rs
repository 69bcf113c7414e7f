//! Kernel launches: a compute kernel built from WGSL, and a batch of launches recorded into one
//! command buffer (each in its own compute pass, so wgpu orders them) and submitted together.

use super::GpuContext;
use crate::error::{Error, Result};

/// One entry point of a WGSL source, its bind-group layout inferred from the shader.
pub struct Kernel {
    pipeline: wgpu::ComputePipeline,
}

impl Kernel {
    /// A kernel the device cannot run (e.g. more workgroup memory than it has) is an error, not
    /// a panic.
    pub fn new(ctx: &GpuContext, label: &str, source: &str, entry: &str) -> Result<Self> {
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = ctx
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = ctx
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        match pollster::block_on(scope.pop()) {
            None => Ok(Self { pipeline }),
            Some(e) => Err(Error::Gpu(format!(
                "the `{label}` kernel cannot run on {}: {e}",
                ctx.adapter.name
            ))),
        }
    }
}

/// How many workgroups a launch runs.
#[derive(Clone, Copy)]
pub enum Groups<'a> {
    /// A 2-D grid (see [`super::buffers::dispatch_size`]).
    Grid((u32, u32)),
    /// Read on the GPU from three u32 in this buffer (written by an earlier launch).
    Indirect(&'a wgpu::Buffer),
}

/// Launches recorded in order and submitted together.
pub struct Launches<'c> {
    ctx: &'c GpuContext,
    encoder: wgpu::CommandEncoder,
}

impl<'c> Launches<'c> {
    pub fn new(ctx: &'c GpuContext) -> Self {
        Self {
            ctx,
            encoder: ctx.device.create_command_encoder(&Default::default()),
        }
    }

    /// Records `kernel` with `(binding, buffer)` pairs of its group 0.
    pub fn launch(&mut self, kernel: &Kernel, bindings: &[(u32, &wgpu::Buffer)], groups: Groups) {
        let entries: Vec<wgpu::BindGroupEntry> = bindings
            .iter()
            .map(|(binding, buffer)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        let group = self
            .ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &kernel.pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
        let mut pass = self.encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &group, &[]);
        match groups {
            Groups::Grid((x, y)) => pass.dispatch_workgroups(x, y, 1),
            Groups::Indirect(args) => pass.dispatch_workgroups_indirect(args, 0),
        }
    }

    /// Records a copy of `bytes` bytes between buffers.
    pub fn copy(
        &mut self,
        from: &wgpu::Buffer,
        at: u64,
        to: &wgpu::Buffer,
        to_at: u64,
        bytes: u64,
    ) {
        self.encoder
            .copy_buffer_to_buffer(from, at, to, to_at, bytes);
    }

    pub fn clear(&mut self, buffer: &wgpu::Buffer) {
        self.encoder.clear_buffer(buffer, 0, None);
    }

    /// Submits everything recorded (work submitted to the queue runs in order).
    pub fn submit(self) {
        self.ctx.queue.submit([self.encoder.finish()]);
    }
}

/// Records and submits one launch.
pub fn launch_once(
    ctx: &GpuContext,
    kernel: &Kernel,
    bindings: &[(u32, &wgpu::Buffer)],
    groups: Groups,
) {
    let mut launches = Launches::new(ctx);
    launches.launch(kernel, bindings, groups);
    launches.submit();
}
