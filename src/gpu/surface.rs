//! A triangle surface rendered as threestudio's mesh stages render it, through the
//! differentiable rasteriser: per view and pixel, either the interpolated vertex normal (world
//! space, normalised) as a colour (n̂ + 1)/2 — the geometry stage, with the backward to the
//! vertex positions through the normals, the barycentrics and the silhouettes — or the
//! interpolated vertex albedo, or an albedo field's colour at the surface point under each
//! pixel — the texture stage, geometry frozen, with the backward to the albedo. Each comes with
//! the coverage, 0 off the surface, antialiased across silhouettes. Every vertex must lie in
//! front of every camera (no clipping at w = 0).

use super::mesh_preview::view_projection;
use super::raster::GpuRasterizer;
use super::GpuContext;
use crate::camera::Camera;
use crate::error::{Error, Result};
use crate::mesh::surface::VertexNormals;
use crate::raster::RasterShape;
use nalgebra::{Matrix4, Vector3, Vector4};
use std::sync::Arc;

/// What the backward needs from the last render.
enum Saved {
    Normals(NormalRender),
    /// Per pixel: whether a triangle covers it.
    Albedo(Vec<bool>),
    /// As `Albedo`, for colours given per covered pixel.
    Texture(Vec<bool>),
}

/// A surface rendered with colours looked up at its points (a texture field).
pub struct TextureRender {
    /// Per pixel (colour, coverage), antialiased.
    pub image: Vec<[f32; 4]>,
    /// The surface point under each covered pixel, in pixel order.
    pub points: Vec<[f32; 3]>,
    /// The colour looked up at each of those points.
    pub colours: Vec<[f32; 3]>,
}

struct NormalRender {
    positions: Vec<[f64; 3]>,
    triangles: Vec<[u32; 3]>,
    normals: VertexNormals,
    views: Vec<Matrix4<f64>>,
    /// Per pixel: the interpolated (unnormalised) normal, where a triangle covers it and the
    /// normal is not zero (adjacent normals can cancel).
    interpolated: Vec<Option<[f64; 3]>>,
}

/// The view-projection matrix of each camera, and the raster.
struct Rasterized {
    views: Vec<Matrix4<f64>>,
    raster: Vec<[f32; 4]>,
}

pub struct SurfaceRenderer {
    raster: GpuRasterizer,
    saved: Option<Saved>,
}

impl SurfaceRenderer {
    pub fn new(ctx: Arc<GpuContext>) -> Result<Self> {
        Ok(Self {
            raster: GpuRasterizer::new(ctx)?,
            saved: None,
        })
    }

    /// Rasterises the surface from each camera (`size`×`size`).
    fn rasterize(
        &mut self,
        positions: &[[f64; 3]],
        triangles: &[[u32; 3]],
        cameras: &[Camera],
        size: u32,
    ) -> Result<Rasterized> {
        // A render that fails half-way must not leave the last one's state for a backward.
        self.saved = None;
        let views: Vec<Matrix4<f64>> = cameras.iter().map(view_projection).collect();
        let clip: Vec<[f32; 4]> = views
            .iter()
            .flat_map(|m| {
                positions.iter().map(move |p| {
                    let c = m * Vector4::new(p[0], p[1], p[2], 1.0);
                    [c.x as f32, c.y as f32, c.z as f32, c.w as f32]
                })
            })
            .collect();
        let shape = RasterShape {
            views: cameras.len() as u32,
            width: size,
            height: size,
        };
        let raster = self.raster.rasterize(shape, &clip, triangles)?;
        Ok(Rasterized { views, raster })
    }

    /// `size`×`size` images of the surface from each camera: per pixel (normal colour, coverage).
    pub fn render(
        &mut self,
        positions: &[[f64; 3]],
        triangles: &[[u32; 3]],
        cameras: &[Camera],
        size: u32,
    ) -> Result<Vec<[f32; 4]>> {
        let Rasterized { views, raster } = self.rasterize(positions, triangles, cameras, size)?;
        let normals = VertexNormals::new(positions, triangles);
        let attributes: Vec<f32> = normals.unit.iter().flatten().map(|&v| v as f32).collect();
        let at_pixels = self.raster.interpolate(&attributes, 3)?;
        let interpolated: Vec<Option<[f64; 3]>> = raster
            .iter()
            .zip(at_pixels.chunks_exact(3))
            .map(|(r, n)| {
                let n = [n[0], n[1], n[2]].map(f64::from);
                (r[3] > 0.0 && Vector3::from(n).norm() > 0.0).then_some(n)
            })
            .collect();
        let shaded: Vec<f32> = interpolated
            .iter()
            .zip(&raster)
            .flat_map(|(n, r)| match n {
                Some(n) => {
                    let u = Vector3::from(*n).normalize();
                    [
                        (u[0] + 1.0) / 2.0,
                        (u[1] + 1.0) / 2.0,
                        (u[2] + 1.0) / 2.0,
                        1.0,
                    ]
                    .map(|v| v as f32)
                }
                // Covered, with a zero normal: n̂ = 0, and no gradient.
                None if r[3] > 0.0 => [0.5, 0.5, 0.5, 1.0],
                None => [0.0; 4],
            })
            .collect();
        let out = self.raster.antialias(&shaded, 4)?;
        self.saved = Some(Saved::Normals(NormalRender {
            positions: positions.to_vec(),
            triangles: triangles.to_vec(),
            normals,
            views,
            interpolated,
        }));
        Ok(pixels(&out))
    }

    /// `size`×`size` images of the surface from each camera with per-vertex `albedo`: per pixel
    /// (albedo, coverage).
    pub fn render_albedo(
        &mut self,
        positions: &[[f64; 3]],
        triangles: &[[u32; 3]],
        albedo: &[[f64; 3]],
        cameras: &[Camera],
        size: u32,
    ) -> Result<Vec<[f32; 4]>> {
        if albedo.len() != positions.len() {
            return Err(Error::Input(format!(
                "{} albedo values for {} vertices: give one per vertex",
                albedo.len(),
                positions.len()
            )));
        }
        let raster = self.rasterize(positions, triangles, cameras, size)?.raster;
        let attributes: Vec<f32> = albedo.iter().flatten().map(|&v| v as f32).collect();
        let at_pixels = self.raster.interpolate(&attributes, 3)?;
        let covered: Vec<bool> = raster.iter().map(|r| r[3] > 0.0).collect();
        let shaded: Vec<f32> = covered
            .iter()
            .zip(at_pixels.chunks_exact(3))
            .flat_map(|(&c, a)| if c { [a[0], a[1], a[2], 1.0] } else { [0.0; 4] })
            .collect();
        let out = self.raster.antialias(&shaded, 4)?;
        self.saved = Some(Saved::Albedo(covered));
        Ok(pixels(&out))
    }

    /// `size`×`size` images of the surface from each camera, coloured by `albedo_at` at the
    /// surface point under each covered pixel (interpolated from the vertex positions): the
    /// texture stage's view of an albedo field, the geometry frozen.
    pub fn render_texture(
        &mut self,
        positions: &[[f64; 3]],
        triangles: &[[u32; 3]],
        cameras: &[Camera],
        size: u32,
        albedo_at: impl FnOnce(&[[f32; 3]]) -> Result<Vec<[f32; 3]>>,
    ) -> Result<TextureRender> {
        let raster = self.rasterize(positions, triangles, cameras, size)?.raster;
        let attributes: Vec<f32> = positions.iter().flatten().map(|&v| v as f32).collect();
        let at_pixels = self.raster.interpolate(&attributes, 3)?;
        let covered: Vec<bool> = raster.iter().map(|r| r[3] > 0.0).collect();
        let points: Vec<[f32; 3]> = covered
            .iter()
            .zip(at_pixels.chunks_exact(3))
            .filter(|(&c, _)| c)
            .map(|(_, p)| [p[0], p[1], p[2]])
            .collect();
        let colours = albedo_at(&points)?;
        if colours.len() != points.len() {
            return Err(Error::Input(format!(
                "{} colours for {} surface points",
                colours.len(),
                points.len()
            )));
        }
        let mut next = colours.iter();
        let shaded: Vec<f32> = covered
            .iter()
            .flat_map(|&c| match c {
                true => {
                    let a = next.next().expect("one colour per covered pixel");
                    [a[0], a[1], a[2], 1.0]
                }
                false => [0.0; 4],
            })
            .collect();
        let out = self.raster.antialias(&shaded, 4)?;
        self.saved = Some(Saved::Texture(covered));
        Ok(TextureRender {
            image: pixels(&out),
            points,
            colours,
        })
    }

    /// dL/d(colour) at each surface point of the last texture render (in its `points` order)
    /// from dL/d(its pixels).
    pub fn texture_backward(&mut self, grad: &[[f32; 4]]) -> Result<Vec<[f32; 3]>> {
        let Some(Saved::Texture(covered)) = &self.saved else {
            return Err(Error::Gpu(
                "texture backward needs a texture render first".into(),
            ));
        };
        let flat: Vec<f32> = grad.iter().flatten().copied().collect();
        let (grad_shaded, _) = self.raster.antialias_backward(&flat)?;
        Ok(covered
            .iter()
            .zip(grad_shaded.chunks_exact(4))
            .filter(|(&c, _)| c)
            .map(|(_, g)| [g[0], g[1], g[2]])
            .collect())
    }

    /// dL/d(vertex albedo) from dL/d(the last albedo render's pixels), the geometry held fixed.
    pub fn albedo_backward(&mut self, grad: &[[f32; 4]]) -> Result<Vec<[f64; 3]>> {
        let Some(Saved::Albedo(covered)) = &self.saved else {
            return Err(Error::Gpu(
                "albedo backward needs an albedo render first".into(),
            ));
        };
        let flat: Vec<f32> = grad.iter().flatten().copied().collect();
        let (grad_shaded, _) = self.raster.antialias_backward(&flat)?;
        let grad_albedo: Vec<f32> = covered
            .iter()
            .zip(grad_shaded.chunks_exact(4))
            .flat_map(|(&c, g)| if c { [g[0], g[1], g[2]] } else { [0.0; 3] })
            .collect();
        let (grad_attributes, _) = self.raster.interpolate_backward(&grad_albedo)?;
        Ok(grad_attributes
            .chunks_exact(3)
            .map(|g| [g[0], g[1], g[2]].map(f64::from))
            .collect())
    }

    /// dL/d(vertex positions) from dL/d(the last render's pixels).
    pub fn backward(&mut self, grad: &[[f32; 4]]) -> Result<Vec<[f64; 3]>> {
        let Some(Saved::Normals(saved)) = &self.saved else {
            return Err(Error::Gpu(
                "surface backward needs a normal render first".into(),
            ));
        };
        let flat: Vec<f32> = grad.iter().flatten().copied().collect();
        let (grad_shaded, grad_clip_silhouettes) = self.raster.antialias_backward(&flat)?;
        // Through (n̂ + 1)/2, n̂ = n/|n|: dL/dn = (g − (g·n̂)n̂)/|n| with g = dL/dn̂. Coverage is
        // 1 on every covered pixel whatever the positions: no gradient.
        let grad_interpolated: Vec<f32> = saved
            .interpolated
            .iter()
            .zip(grad_shaded.chunks_exact(4))
            .flat_map(|(n, g)| match n {
                Some(n) => {
                    let n = Vector3::from(*n);
                    let (length, u) = (n.norm(), n.normalize());
                    let g = Vector3::new(g[0], g[1], g[2]).map(|v| f64::from(v) / 2.0);
                    let grad = (g - u * g.dot(&u)) / length;
                    [grad.x as f32, grad.y as f32, grad.z as f32]
                }
                None => [0.0; 3],
            })
            .collect();
        let (grad_normals, grad_clip_normals) =
            self.raster.interpolate_backward(&grad_interpolated)?;
        let grad_unit: Vec<[f64; 3]> = grad_normals
            .chunks_exact(3)
            .map(|g| [g[0], g[1], g[2]].map(f64::from))
            .collect();
        let mut grad_positions =
            saved
                .normals
                .backward(&saved.positions, &saved.triangles, &grad_unit);
        // Clip = M·(p, 1) per view: dL/dp = (first three columns of M)ᵀ·dL/dclip.
        let vertices = saved.positions.len();
        for (view, m) in saved.views.iter().enumerate() {
            for (v, out) in grad_positions.iter_mut().enumerate() {
                let at = view * vertices + v;
                let g = [0, 1, 2, 3].map(|r| {
                    f64::from(grad_clip_silhouettes[at][r]) + f64::from(grad_clip_normals[at][r])
                });
                for (k, o) in out.iter_mut().enumerate() {
                    *o += (0..4).map(|r| m[(r, k)] * g[r]).sum::<f64>();
                }
            }
        }
        Ok(grad_positions)
    }
}

fn pixels(values: &[f32]) -> Vec<[f32; 4]> {
    values
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect()
}
