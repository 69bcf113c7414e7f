//! The differentiable rasteriser on wgpu (`shaders/raster.wgsl`; conventions in `crate::raster`):
//! the hardware rasteriser finds each pixel's nearest triangle, compute kernels solve its
//! barycentrics, interpolate vertex attributes, antialias silhouettes (nvdiffrast's analytic
//! method, `shaders/antialias.wgsl`) and take each backward. Every vertex must lie in front of
//! every camera (w > 0): there is no clipping at w = 0. Checked against
//! `crate::raster::reference` in `tests/gpu_raster.rs`.

use super::buffers::{
    dispatch_size, download, download_ranges, storage, storage_with, uniform, values_of,
};
use super::launch::{Groups, Kernel, Launches};
use super::shader::raster_source;
use super::GpuContext;
use crate::error::{Error, Result};
use crate::raster::{edge_opposites, RasterShape, MAX_TRIANGLES};
use std::sync::Arc;

const ID_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::R32Uint;
const DEPTH_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Depth32Float;

/// `RasterFrame` in `shaders/raster.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RasterUniform {
    pub views: u32,
    pub width: u32,
    pub height: u32,
    pub vertices: u32,
    pub channels: u32,
    pub row_pitch: u32,
    pub clip_grad_offset: u32,
    pub pad: u32,
}

/// What the last `rasterize` left on the GPU.
struct Frame {
    shape: RasterShape,
    settings: RasterUniform,
    vertices: u32,
    uniform: wgpu::Buffer,
    clip: wgpu::Buffer,
    triangles: wgpu::Buffer,
    ids: wgpu::Buffer,
    raster: wgpu::Buffer,
    /// The triangles, for `opposites` when antialiasing first needs them.
    triangle_list: Vec<[u32; 3]>,
    opposites: Option<wgpu::Buffer>,
    /// The last `interpolate`'s attributes and channel count.
    attributes: Option<(wgpu::Buffer, u32)>,
    /// The last `antialias`'s colours and channel count.
    colours: Option<(wgpu::Buffer, u32)>,
}

pub struct GpuRasterizer {
    ctx: Arc<GpuContext>,
    visibility: wgpu::RenderPipeline,
    resolve: Kernel,
    interpolate: Kernel,
    interpolate_backward: Kernel,
    antialias: Kernel,
    antialias_backward: Kernel,
    frame: Option<Frame>,
}

impl GpuRasterizer {
    pub fn new(ctx: Arc<GpuContext>) -> Result<Self> {
        let source = raster_source(ctx.float_atomics);
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = ctx
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("raster"),
                source: wgpu::ShaderSource::Wgsl(source.as_str().into()),
            });
        let visibility = ctx
            .device
            .create_render_pipeline(&wgpu::RenderPipelineDescriptor {
                label: Some("visibility"),
                layout: None,
                vertex: wgpu::VertexState {
                    module: &module,
                    entry_point: Some("visibility_vertex"),
                    compilation_options: Default::default(),
                    buffers: &[],
                },
                // Both sides: a surface being optimised may face either way.
                primitive: wgpu::PrimitiveState::default(),
                depth_stencil: Some(wgpu::DepthStencilState {
                    format: DEPTH_FORMAT,
                    depth_write_enabled: Some(true),
                    depth_compare: Some(wgpu::CompareFunction::Less),
                    stencil: Default::default(),
                    bias: Default::default(),
                }),
                multisample: Default::default(),
                fragment: Some(wgpu::FragmentState {
                    module: &module,
                    entry_point: Some("visibility_fragment"),
                    compilation_options: Default::default(),
                    targets: &[Some(ID_FORMAT.into())],
                }),
                multiview_mask: None,
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!(
                "the rasteriser's visibility pass cannot run on {}: {e}",
                ctx.adapter.name
            )));
        }
        let kernel = |entry| Kernel::new(&ctx, entry, &source, entry);
        Ok(Self {
            visibility,
            resolve: kernel("resolve")?,
            interpolate: kernel("interpolate")?,
            interpolate_backward: kernel("interpolate_backward")?,
            antialias: kernel("antialias")?,
            antialias_backward: kernel("antialias_backward")?,
            frame: None,
            ctx,
        })
    }

    /// Rasterises `triangles` (vertex indices) seen through `shape.views` sets of clip
    /// positions (`clip`: the same number of vertices per view) and returns each pixel's
    /// (b₀, b₁, z/w, triangle + 1), 0 where nothing is seen.
    pub fn rasterize(
        &mut self,
        shape: RasterShape,
        clip: &[[f32; 4]],
        triangles: &[[u32; 3]],
    ) -> Result<Vec<[f32; 4]>> {
        let vertices = self.check_mesh(shape, clip, triangles)?;
        let ctx = &self.ctx;
        let row_pitch = shape
            .width
            .next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT / 4);
        let rows = shape.views * shape.height;
        let limit = ctx.device.limits().max_texture_dimension_2d;
        if shape.width > limit || rows > limit {
            return Err(Error::Gpu(format!(
                "a raster of {} views of {}×{} needs a {}×{rows} target; {} allows {limit} pixels a side: rasterise fewer views at a time",
                shape.views, shape.width, shape.height, shape.width, ctx.adapter.name
            )));
        }
        let frame_uniform = RasterUniform {
            views: shape.views,
            width: shape.width,
            height: shape.height,
            vertices,
            channels: 0,
            row_pitch,
            clip_grad_offset: 0,
            pad: 0,
        };
        let frame = Frame {
            shape,
            settings: frame_uniform,
            vertices,
            uniform: uniform(ctx, "raster frame", &frame_uniform),
            clip: storage_with(ctx, "clip positions", clip),
            triangles: storage_with(ctx, "triangles", triangles),
            ids: storage(ctx, "visible triangles", 4 * (row_pitch * rows) as u64),
            raster: storage(ctx, "raster", 16 * shape.pixels() as u64),
            triangle_list: triangles.to_vec(),
            opposites: None,
            attributes: None,
            colours: None,
        };

        let target = |format, usage| {
            ctx.device.create_texture(&wgpu::TextureDescriptor {
                label: Some("visibility"),
                size: wgpu::Extent3d {
                    width: shape.width,
                    height: rows,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format,
                usage,
                view_formats: &[],
            })
        };
        let attachment = wgpu::TextureUsages::RENDER_ATTACHMENT;
        let ids = target(ID_FORMAT, attachment | wgpu::TextureUsages::COPY_SRC);
        let depth = target(DEPTH_FORMAT, attachment);
        let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("visibility"),
            layout: &self.visibility.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: frame.uniform.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: frame.clip.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: frame.triangles.as_entire_binding(),
                },
            ],
        });
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let ids_view = ids.create_view(&Default::default());
            let depth_view = depth.create_view(&Default::default());
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("visibility"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &ids_view,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::TRANSPARENT),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                depth_stencil_attachment: Some(wgpu::RenderPassDepthStencilAttachment {
                    view: &depth_view,
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
            pass.set_pipeline(&self.visibility);
            pass.set_bind_group(0, &group, &[]);
            let (w, h) = (shape.width as f32, shape.height as f32);
            for view in 0..shape.views {
                let top = view * shape.height;
                pass.set_viewport(0.0, top as f32, w, h, 0.0, 1.0);
                pass.set_scissor_rect(0, top, shape.width, shape.height);
                pass.draw(0..3 * triangles.len() as u32, view..view + 1);
            }
        }
        encoder.copy_texture_to_buffer(
            wgpu::TexelCopyTextureInfo {
                texture: &ids,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::TexelCopyBufferInfo {
                buffer: &frame.ids,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(4 * row_pitch),
                    rows_per_image: None,
                },
            },
            wgpu::Extent3d {
                width: shape.width,
                height: rows,
                depth_or_array_layers: 1,
            },
        );
        ctx.queue.submit([encoder.finish()]);
        let mut launches = Launches::new(ctx);
        launches.launch(
            &self.resolve,
            &[
                (0, &frame.uniform),
                (1, &frame.clip),
                (2, &frame.triangles),
                (3, &frame.ids),
                (5, &frame.raster),
            ],
            pixel_groups(shape),
        );
        launches.submit();
        let raster = download(ctx, &frame.raster, shape.pixels())?;
        self.frame = Some(frame);
        Ok(raster)
    }

    /// `channels` attributes per vertex (the same for every view) at each pixel of the last
    /// raster, pixel-major; 0 where nothing is seen.
    pub fn interpolate(&mut self, attributes: &[f32], channels: u32) -> Result<Vec<f32>> {
        let frame = self.frame.as_mut().ok_or_else(not_rasterized)?;
        if channels == 0 || attributes.len() != (frame.vertices * channels) as usize {
            return Err(Error::Gpu(format!(
                "interpolate: {} attribute values for {} vertices is not a whole, non-zero number of channels ({channels} asked)",
                attributes.len(),
                frame.vertices
            )));
        }
        let ctx = &self.ctx;
        set_call(ctx, frame, channels, 0);
        let out = storage(
            ctx,
            "interpolated",
            4 * (frame.shape.pixels() * channels as usize) as u64,
        );
        let buffer = storage_with(ctx, "attributes", attributes);
        let mut launches = Launches::new(ctx);
        launches.launch(
            &self.interpolate,
            &[
                (0, &frame.uniform),
                (2, &frame.triangles),
                (5, &frame.raster),
                (6, &buffer),
                (7, &out),
            ],
            pixel_groups(frame.shape),
        );
        launches.submit();
        frame.attributes = Some((buffer, channels));
        download(ctx, &out, frame.shape.pixels() * channels as usize)
    }

    /// Given dL/d(the last `interpolate`'s output), dL/d(its attributes) and dL/d(the last
    /// raster's clip positions), with each pixel's triangle held fixed.
    pub fn interpolate_backward(&mut self, grad: &[f32]) -> Result<(Vec<f32>, Vec<[f32; 4]>)> {
        let frame = self.frame.as_ref().ok_or_else(not_rasterized)?;
        let (attributes, channels) = frame.attributes.as_ref().ok_or_else(|| {
            Error::Gpu("interpolate_backward needs an interpolate after the raster".into())
        })?;
        let outputs = frame.shape.pixels() * *channels as usize;
        if grad.len() != outputs {
            return Err(Error::Gpu(format!(
                "interpolate_backward: {} gradient values for {outputs} interpolated ones",
                grad.len()
            )));
        }
        let ctx = &self.ctx;
        let attribute_grads = (frame.vertices * channels) as usize;
        set_call(ctx, frame, *channels, attribute_grads as u32);
        let clip_grads = 4 * (frame.shape.views * frame.vertices) as usize;
        let grads = storage(
            ctx,
            "raster gradients",
            4 * (attribute_grads + clip_grads) as u64,
        );
        let grad_buffer = storage_with(ctx, "interpolated gradient", grad);
        let mut launches = Launches::new(ctx);
        launches.clear(&grads);
        launches.launch(
            &self.interpolate_backward,
            &[
                (0, &frame.uniform),
                (1, &frame.clip),
                (2, &frame.triangles),
                (4, &grads),
                (5, &frame.raster),
                (6, attributes),
                (8, &grad_buffer),
            ],
            pixel_groups(frame.shape),
        );
        launches.submit();
        let all: Vec<f32> = download(ctx, &grads, attribute_grads + clip_grads)?;
        let (attribute_part, clip_part) = all.split_at(attribute_grads);
        Ok((attribute_part.to_vec(), clip_rows(clip_part)))
    }

    /// `colours` (`channels` per pixel of the last raster, e.g. an interpolated and shaded
    /// image) antialiased across silhouette edges.
    pub fn antialias(&mut self, colours: &[f32], channels: u32) -> Result<Vec<f32>> {
        let ctx = self.ctx.clone();
        let frame = self.frame.as_mut().ok_or_else(not_rasterized)?;
        let values = frame.shape.pixels() * channels as usize;
        if channels == 0 || colours.len() != values {
            return Err(Error::Gpu(format!(
                "antialias: {} colour values for {} pixels is not a whole, non-zero number of channels ({channels} asked)",
                colours.len(),
                frame.shape.pixels()
            )));
        }
        if frame.opposites.is_none() {
            let opposites = edge_opposites(&frame.triangle_list);
            frame.opposites = Some(storage_with(&ctx, "edge opposites", &opposites));
        }
        set_call(&ctx, frame, channels, 0);
        let buffer = storage_with(&ctx, "colours", colours);
        let out = storage(&ctx, "antialiased", 4 * values as u64);
        let mut launches = Launches::new(&ctx);
        launches.launch(
            &self.antialias,
            &[
                (0, &frame.uniform),
                (1, &frame.clip),
                (2, &frame.triangles),
                (5, &frame.raster),
                (9, frame.opposites.as_ref().expect("made above")),
                (10, &buffer),
                (11, &out),
            ],
            pixel_groups(frame.shape),
        );
        launches.submit();
        frame.colours = Some((buffer, channels));
        download(&ctx, &out, values)
    }

    /// Given dL/d(the last `antialias`'s output), dL/d(its colours) and dL/d(the last raster's
    /// clip positions), with the raster held fixed.
    pub fn antialias_backward(&mut self, grad: &[f32]) -> Result<(Vec<f32>, Vec<[f32; 4]>)> {
        let frame = self.frame.as_ref().ok_or_else(not_rasterized)?;
        let (colours, channels) = frame.colours.as_ref().ok_or_else(|| {
            Error::Gpu("antialias_backward needs an antialias after the raster".into())
        })?;
        let values = frame.shape.pixels() * *channels as usize;
        if grad.len() != values {
            return Err(Error::Gpu(format!(
                "antialias_backward: {} gradient values for {values} antialiased ones",
                grad.len()
            )));
        }
        let ctx = &self.ctx;
        set_call(ctx, frame, *channels, 0);
        let clip_grads = 4 * (frame.shape.views * frame.vertices) as usize;
        let grads = storage(ctx, "clip gradients", 4 * clip_grads as u64);
        let grad_buffer = storage_with(ctx, "antialiased gradient", grad);
        let grad_colours = storage(ctx, "colour gradients", 4 * values as u64);
        let mut launches = Launches::new(ctx);
        launches.clear(&grads);
        launches.launch(
            &self.antialias_backward,
            &[
                (0, &frame.uniform),
                (1, &frame.clip),
                (2, &frame.triangles),
                (4, &grads),
                (5, &frame.raster),
                (9, frame.opposites.as_ref().expect("made by antialias")),
                (10, colours),
                (12, &grad_buffer),
                (13, &grad_colours),
            ],
            pixel_groups(frame.shape),
        );
        launches.submit();
        let ranges = download_ranges(
            ctx,
            &[
                (&grad_colours, 0, 4 * values as u64),
                (&grads, 0, 4 * clip_grads as u64),
            ],
        )?;
        Ok((values_of(&ranges[0]), clip_rows(&values_of(&ranges[1]))))
    }

    /// Vertices per view, after checking the mesh fits the shape and the raster's id range.
    fn check_mesh(
        &self,
        shape: RasterShape,
        clip: &[[f32; 4]],
        triangles: &[[u32; 3]],
    ) -> Result<u32> {
        if shape.views == 0 || shape.width == 0 || shape.height == 0 {
            return Err(Error::Gpu(format!(
                "rasterize: an empty raster ({shape:?})"
            )));
        }
        if clip.len() % shape.views as usize != 0 {
            return Err(Error::Gpu(format!(
                "rasterize: {} clip positions do not split into {} views",
                clip.len(),
                shape.views
            )));
        }
        let vertices = clip.len() / shape.views as usize;
        if triangles.len() >= MAX_TRIANGLES {
            return Err(Error::Gpu(format!(
                "rasterize: {} triangles; a raster indexes fewer than {MAX_TRIANGLES}",
                triangles.len()
            )));
        }
        if let Some(t) = triangles
            .iter()
            .position(|t| t.iter().any(|&v| v as usize >= vertices))
        {
            return Err(Error::Gpu(format!(
                "rasterize: triangle {t} {:?} indexes past the {vertices} vertices of a view",
                triangles[t]
            )));
        }
        Ok(vertices as u32)
    }
}

fn not_rasterized() -> Error {
    Error::Gpu("interpolating and antialiasing need a raster: call rasterize first".into())
}

/// The per-call part of the frame's uniform: channels per vertex or pixel, and where the clip
/// positions' gradients start in the gradient buffer.
fn set_call(ctx: &GpuContext, frame: &Frame, channels: u32, clip_grad_offset: u32) {
    let value = RasterUniform {
        channels,
        clip_grad_offset,
        ..frame.settings
    };
    ctx.queue
        .write_buffer(&frame.uniform, 0, bytemuck::bytes_of(&value));
}

fn clip_rows(values: &[f32]) -> Vec<[f32; 4]> {
    values
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect()
}

fn pixel_groups(shape: RasterShape) -> Groups<'static> {
    Groups::Grid(dispatch_size((shape.pixels() as u32).div_ceil(64)))
}
