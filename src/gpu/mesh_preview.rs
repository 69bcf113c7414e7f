//! A small wgpu rasteriser for previews of exported meshes: depth-tested, 4× multisampled,
//! albedo under a headlight on white, read back as sRGB images.

use super::shader::MESH_PREVIEW;
use super::GpuContext;
use crate::camera::Camera;
use crate::error::{Error, Result};
use crate::mesh::load::Part;
use nalgebra::{Matrix4, Perspective3};
use std::sync::Arc;
use wgpu::util::DeviceExt;

const COLOR_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8UnormSrgb;
const DEPTH_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Depth32Float;
const SAMPLES: u32 = 4;
/// Clip planes around an object near the origin seen from a few units away.
const NEAR: f64 = 0.05;
const FAR: f64 = 100.0;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Vertex {
    position: [f32; 3],
    normal: [f32; 3],
    color: [f32; 4],
    uv: [f32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ViewUniform {
    /// Column-major, world to wgpu clip space (depth in [0, 1]).
    pub view_proj: [f32; 16],
    pub eye: [f32; 4],
}

/// The world-to-clip transform of `camera` for a square image.
pub fn view_projection(camera: &Camera) -> Matrix4<f64> {
    let projection = Perspective3::new(1.0, camera.fov_y.to_radians(), NEAR, FAR).to_homogeneous();
    // OpenGL's depth range [−1, 1] → wgpu's [0, 1].
    let depth = Matrix4::new(
        1.0, 0.0, 0.0, 0.0, //
        0.0, 1.0, 0.0, 0.0, //
        0.0, 0.0, 0.5, 0.5, //
        0.0, 0.0, 0.0, 1.0,
    );
    let view = camera
        .c2w
        .try_inverse()
        .expect("camera transforms are rigid");
    depth * projection * view
}

struct GpuPart {
    vertices: wgpu::Buffer,
    indices: wgpu::Buffer,
    index_count: u32,
    material: wgpu::BindGroup,
}

pub struct MeshPreview {
    ctx: Arc<GpuContext>,
    pipeline: wgpu::RenderPipeline,
    parts: Vec<GpuPart>,
}

impl MeshPreview {
    pub fn new(ctx: Arc<GpuContext>, parts: &[Part]) -> Result<Self> {
        let device = &ctx.device;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("mesh preview"),
            source: wgpu::ShaderSource::Wgsl(MESH_PREVIEW.into()),
        });
        let attributes = wgpu::vertex_attr_array![0 => Float32x3, 1 => Float32x3, 2 => Float32x4, 3 => Float32x2];
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("mesh preview"),
            layout: None,
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vertex_main"),
                compilation_options: Default::default(),
                buffers: &[Some(wgpu::VertexBufferLayout {
                    array_stride: std::mem::size_of::<Vertex>() as u64,
                    step_mode: wgpu::VertexStepMode::Vertex,
                    attributes: &attributes,
                })],
            },
            // Both sides: isosurfaces of thin parts and foreign assets may face either way.
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: Some(wgpu::DepthStencilState {
                format: DEPTH_FORMAT,
                depth_write_enabled: Some(true),
                depth_compare: Some(wgpu::CompareFunction::Less),
                stencil: Default::default(),
                bias: Default::default(),
            }),
            multisample: wgpu::MultisampleState {
                count: SAMPLES,
                ..Default::default()
            },
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fragment_main"),
                compilation_options: Default::default(),
                targets: &[Some(COLOR_FORMAT.into())],
            }),
            multiview_mask: None,
            cache: None,
        });
        let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
            label: Some("albedo"),
            mag_filter: wgpu::FilterMode::Linear,
            min_filter: wgpu::FilterMode::Linear,
            ..Default::default()
        });
        let white = image::RgbaImage::from_pixel(1, 1, image::Rgba([255; 4]));
        let parts = parts
            .iter()
            .map(|part| {
                let vertices: Vec<Vertex> = (0..part.positions.len())
                    .map(|i| Vertex {
                        position: part.positions[i],
                        normal: part.normals[i],
                        color: part.colors[i],
                        uv: part.uvs[i],
                    })
                    .collect();
                let texture = texture(&ctx, part.texture.as_ref().unwrap_or(&white));
                let view = texture.create_view(&Default::default());
                GpuPart {
                    vertices: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("preview vertices"),
                        contents: bytemuck::cast_slice(&vertices),
                        usage: wgpu::BufferUsages::VERTEX,
                    }),
                    indices: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("preview indices"),
                        contents: bytemuck::cast_slice(&part.triangles),
                        usage: wgpu::BufferUsages::INDEX,
                    }),
                    index_count: 3 * part.triangles.len() as u32,
                    material: device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("albedo"),
                        layout: &pipeline.get_bind_group_layout(1),
                        entries: &[
                            wgpu::BindGroupEntry {
                                binding: 0,
                                resource: wgpu::BindingResource::TextureView(&view),
                            },
                            wgpu::BindGroupEntry {
                                binding: 1,
                                resource: wgpu::BindingResource::Sampler(&sampler),
                            },
                        ],
                    }),
                }
            })
            .collect();
        Ok(Self {
            ctx,
            pipeline,
            parts,
        })
    }

    /// A `size`×`size` view through `camera`.
    pub fn render(&self, camera: &Camera, size: u32) -> Result<image::RgbImage> {
        let device = &self.ctx.device;
        let target = |format, samples, usage| {
            device.create_texture(&wgpu::TextureDescriptor {
                label: Some("preview target"),
                size: wgpu::Extent3d {
                    width: size,
                    height: size,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: samples,
                dimension: wgpu::TextureDimension::D2,
                format,
                usage,
                view_formats: &[],
            })
        };
        let attachment = wgpu::TextureUsages::RENDER_ATTACHMENT;
        let multisampled =
            target(COLOR_FORMAT, SAMPLES, attachment).create_view(&Default::default());
        let depth = target(DEPTH_FORMAT, SAMPLES, attachment).create_view(&Default::default());
        let resolved = target(COLOR_FORMAT, 1, attachment | wgpu::TextureUsages::COPY_SRC);
        let resolved_view = resolved.create_view(&Default::default());

        let eye = camera.c2w.fixed_view::<3, 1>(0, 3);
        let view_proj = view_projection(camera);
        let uniform = ViewUniform {
            view_proj: std::array::from_fn(|i| view_proj.as_slice()[i] as f32),
            eye: [eye[0] as f32, eye[1] as f32, eye[2] as f32, 1.0],
        };
        let view_buffer = super::buffers::uniform(&self.ctx, "preview view", &uniform);
        let view_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("preview view"),
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: view_buffer.as_entire_binding(),
            }],
        });
        let row_bytes = (4 * size).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("preview readback"),
            size: (row_bytes * size) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });

        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("mesh preview"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &multisampled,
                    depth_slice: None,
                    resolve_target: Some(&resolved_view),
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::WHITE),
                        store: wgpu::StoreOp::Discard,
                    },
                })],
                depth_stencil_attachment: Some(wgpu::RenderPassDepthStencilAttachment {
                    view: &depth,
                    depth_ops: Some(wgpu::Operations {
                        load: wgpu::LoadOp::Clear(1.0),
                        store: wgpu::StoreOp::Discard,
                    }),
                    stencil_ops: None,
                }),
                timestamp_writes: None,
                occlusion_query_set: None,
                multiview_mask: None,
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &view_group, &[]);
            for part in &self.parts {
                pass.set_bind_group(1, &part.material, &[]);
                pass.set_vertex_buffer(0, part.vertices.slice(..));
                pass.set_index_buffer(part.indices.slice(..), wgpu::IndexFormat::Uint32);
                pass.draw_indexed(0..part.index_count, 0, 0..1);
            }
        }
        encoder.copy_texture_to_buffer(
            wgpu::TexelCopyTextureInfo {
                texture: &resolved,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::TexelCopyBufferInfo {
                buffer: &readback,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(row_bytes),
                    rows_per_image: Some(size),
                },
            },
            wgpu::Extent3d {
                width: size,
                height: size,
                depth_or_array_layers: 1,
            },
        );
        self.ctx.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        readback
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
        self.ctx.wait()?;
        rx.recv()
            .map_err(|e| Error::Gpu(format!("preview readback: {e}")))?
            .map_err(|e| Error::Gpu(format!("preview readback: {e}")))?;
        let mapped = readback
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("preview readback: {e}")))?;
        let mut image = image::RgbImage::new(size, size);
        for (y, row) in mapped.chunks_exact(row_bytes as usize).enumerate() {
            for x in 0..size as usize {
                let px = &row[4 * x..4 * x + 3];
                image.put_pixel(x as u32, y as u32, image::Rgb([px[0], px[1], px[2]]));
            }
        }
        Ok(image)
    }
}

fn texture(ctx: &GpuContext, image: &image::RgbaImage) -> wgpu::Texture {
    ctx.device.create_texture_with_data(
        &ctx.queue,
        &wgpu::TextureDescriptor {
            label: Some("albedo"),
            size: wgpu::Extent3d {
                width: image.width(),
                height: image.height(),
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: COLOR_FORMAT,
            usage: wgpu::TextureUsages::TEXTURE_BINDING,
            view_formats: &[],
        },
        wgpu::util::TextureDataOrder::LayerMajor,
        image.as_raw(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Vector4;

    #[test]
    fn points_on_a_cameras_ray_project_to_its_pixel() {
        let camera = Camera::orbit(15.0, 70.0, 3.0, 40.0);
        let size = 64;
        let m = view_projection(&camera);
        for (x, y) in [(0, 0), (10, 50), (31, 32), (63, 5)] {
            let ray = camera.ray(size, size, x, y);
            for t in [1.0, 3.0, 7.0] {
                let p = ray.at(t);
                let clip = m * Vector4::new(p[0], p[1], p[2], 1.0);
                let ndc = clip.xyz() / clip.w;
                // NDC → pixels (y down), as the rasteriser maps them.
                let px = (ndc.x + 1.0) * 0.5 * size as f64;
                let py = (1.0 - ndc.y) * 0.5 * size as f64;
                assert!((px - (x as f64 + 0.5)).abs() < 1e-6, "{px} vs {x}");
                assert!((py - (y as f64 + 0.5)).abs() < 1e-6, "{py} vs {y}");
                assert!((0.0..=1.0).contains(&ndc.z));
            }
        }
    }
}
