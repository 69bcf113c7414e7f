//! Storage buffers: creation (optionally poisoned with noise), uploads, downloads, dispatch
//! sizes.

use super::GpuContext;
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use wgpu::util::DeviceExt;

/// Workgroups along x in one dispatch dimension (WebGPU's guaranteed minimum).
const MAX_GROUPS_X: u32 = 65_535;

/// A read-write storage buffer of `bytes` bytes (at least 16).
pub fn storage(ctx: &GpuContext, label: &str, bytes: u64) -> wgpu::Buffer {
    let size = bytes.max(16).next_multiple_of(4);
    if ctx.poison_buffers {
        let mut rng = rand::rngs::StdRng::seed_from_u64(size);
        let noise: Vec<u8> = (0..size).map(|_| rng.random()).collect();
        return ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &noise,
                usage: usage(),
            });
    }
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage: usage(),
        mapped_at_creation: false,
    })
}

fn usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
}

/// A storage buffer holding `data`.
pub fn storage_with<T: bytemuck::Pod>(ctx: &GpuContext, label: &str, data: &[T]) -> wgpu::Buffer {
    let buffer = storage(ctx, label, std::mem::size_of_val(data) as u64);
    ctx.queue
        .write_buffer(&buffer, 0, bytemuck::cast_slice(data));
    buffer
}

pub fn uniform<T: bytemuck::Pod>(ctx: &GpuContext, label: &str, value: &T) -> wgpu::Buffer {
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(value),
            usage: wgpu::BufferUsages::UNIFORM,
        })
}

/// Copies the first `len` values of `buffer` back to the host (waits for the GPU).
pub fn download<T: bytemuck::Pod>(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    len: usize,
) -> Result<Vec<T>> {
    let bytes = (len * std::mem::size_of::<T>()) as u64;
    if bytes == 0 {
        return Ok(vec![]);
    }
    let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("download"),
        size: bytes.next_multiple_of(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes.next_multiple_of(4));
    ctx.queue.submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging
        .slice(..)
        .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
    ctx.wait()?;
    rx.recv()
        .map_err(|e| Error::Gpu(format!("download: {e}")))?
        .map_err(|e| Error::Gpu(format!("download: {e}")))?;
    let view = staging
        .slice(..)
        .get_mapped_range()
        .map_err(|e| Error::Gpu(format!("download: {e}")))?;
    let data = bytemuck::cast_slice::<u8, T>(&view[..bytes as usize]).to_vec();
    drop(view);
    staging.unmap();
    Ok(data)
}

/// A 2-D grid of workgroups covering `groups` (x · y ≥ groups, x ≤ 65535).
pub fn dispatch_size(groups: u32) -> (u32, u32) {
    let x = groups.clamp(1, MAX_GROUPS_X);
    (x, groups.div_ceil(x).max(1))
}

/// A bind group of `pipeline`'s group 0 from (binding, buffer) pairs.
pub fn bind(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    entries: &[(u32, &wgpu::Buffer)],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> = entries
        .iter()
        .map(|(binding, buffer)| wgpu::BindGroupEntry {
            binding: *binding,
            resource: buffer.as_entire_binding(),
        })
        .collect();
    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}

/// Records one dispatch of `pipeline` over a 2-D grid of workgroups.
pub fn dispatch(
    encoder: &mut wgpu::CommandEncoder,
    pipeline: &wgpu::ComputePipeline,
    group: &wgpu::BindGroup,
    (x, y): (u32, u32),
) {
    let mut pass = encoder.begin_compute_pass(&Default::default());
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, group, &[]);
    pass.dispatch_workgroups(x, y, 1);
}

/// Binds `entries` to `pipeline`'s group 0 and submits one dispatch over `groups` (work
/// submitted to the queue runs in order).
pub fn run(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    entries: &[(u32, &wgpu::Buffer)],
    groups: (u32, u32),
) {
    let group = bind(ctx, pipeline, entries);
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    dispatch(&mut encoder, pipeline, &group, groups);
    ctx.queue.submit([encoder.finish()]);
}

/// A compute pipeline for `entry` of WGSL `source` (layout inferred from the shader); a kernel
/// the device cannot run (e.g. more workgroup memory than it has) is an error, not a panic.
pub fn pipeline(
    ctx: &GpuContext,
    label: &str,
    source: &str,
    entry: &str,
) -> Result<wgpu::ComputePipeline> {
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
        None => Ok(pipeline),
        Some(e) => Err(Error::Gpu(format!(
            "the `{label}` kernel cannot run on {}: {e}",
            ctx.adapter.name
        ))),
    }
}
