//! Storage buffers: creation (optionally poisoned with noise), uploads, downloads (several
//! ranges behind one wait), dispatch sizes.

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
    wgpu::BufferUsages::STORAGE
        | wgpu::BufferUsages::COPY_SRC
        | wgpu::BufferUsages::COPY_DST
        | wgpu::BufferUsages::INDIRECT
}

/// A storage buffer holding `data`.
pub fn storage_with<T: bytemuck::Pod>(ctx: &GpuContext, label: &str, data: &[T]) -> wgpu::Buffer {
    let buffer = storage(ctx, label, std::mem::size_of_val(data) as u64);
    ctx.queue
        .write_buffer(&buffer, 0, bytemuck::cast_slice(data));
    buffer
}

/// A uniform buffer holding `value` (rewritable with `Queue::write_buffer`).
pub fn uniform<T: bytemuck::Pod>(ctx: &GpuContext, label: &str, value: &T) -> wgpu::Buffer {
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(value),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
}

/// Copies the first `len` values of `buffer` back to the host (waits for the GPU).
pub fn download<T: bytemuck::Pod>(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    len: usize,
) -> Result<Vec<T>> {
    let bytes = (len * std::mem::size_of::<T>()) as u64;
    let data = download_ranges(ctx, &[(buffer, 0, bytes)])?;
    Ok(values_of(&data[0]))
}

/// The values in downloaded bytes (which need not be aligned for `T`).
pub fn values_of<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    let mut out = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
    bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(bytes);
    out
}

/// Copies `(buffer, offset, bytes)` ranges back to the host behind one wait; offsets and sizes
/// are multiples of 4.
pub fn download_ranges(
    ctx: &GpuContext,
    ranges: &[(&wgpu::Buffer, u64, u64)],
) -> Result<Vec<Vec<u8>>> {
    Readback::default().read(ctx, ranges)
}

/// A host-readable staging buffer kept for repeated downloads (grown when a larger one comes),
/// so that a training step allocates none.
#[derive(Default)]
pub struct Readback {
    staging: Option<(wgpu::Buffer, u64)>,
}

impl Readback {
    /// As [`download_ranges`], through this staging buffer.
    pub fn read(
        &mut self,
        ctx: &GpuContext,
        ranges: &[(&wgpu::Buffer, u64, u64)],
    ) -> Result<Vec<Vec<u8>>> {
        let total: u64 = ranges.iter().map(|r| r.2).sum();
        if total == 0 {
            return Ok(ranges.iter().map(|_| vec![]).collect());
        }
        if self.staging.as_ref().is_none_or(|(_, size)| *size < total) {
            let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("download"),
                size: total,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.staging = Some((buffer, total));
        }
        let staging = &self.staging.as_ref().expect("allocated above").0;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        let mut at = 0;
        for &(buffer, offset, bytes) in ranges {
            if bytes > 0 {
                encoder.copy_buffer_to_buffer(buffer, offset, staging, at, bytes);
            }
            at += bytes;
        }
        ctx.queue.submit([encoder.finish()]);
        let slice = staging.slice(..total);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
        ctx.wait()?;
        let failed = |e: &dyn std::fmt::Display| Error::Gpu(format!("download: {e}"));
        rx.recv().map_err(|e| failed(&e))?.map_err(|e| failed(&e))?;
        let view = slice.get_mapped_range().map_err(|e| failed(&e))?;
        let mut out = Vec::with_capacity(ranges.len());
        let mut at = 0;
        for &(_, _, bytes) in ranges {
            out.push(view[at as usize..(at + bytes) as usize].to_vec());
            at += bytes;
        }
        drop(view);
        staging.unmap();
        Ok(out)
    }
}

/// A 2-D grid of workgroups covering `groups` (x · y ≥ groups, x ≤ 65535).
pub fn dispatch_size(groups: u32) -> (u32, u32) {
    let x = groups.clamp(1, MAX_GROUPS_X);
    (x, groups.div_ceil(x).max(1))
}
