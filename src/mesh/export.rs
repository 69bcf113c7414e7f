//! From a field to a mesh: density on a grid (GPU), isosurface, clean-up, albedo per vertex
//! or baked into a texture atlas.

use super::atlas::{self, Atlas};
use super::isosurface::Grid;
use super::TriangleMesh;
use crate::error::{Error, Result};
use crate::gpu::GpuField;

/// Export settings (threestudio's isosurface threshold of 25 by default).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExportSettings {
    /// Grid points per side.
    pub resolution: u32,
    /// Density at the surface.
    pub threshold: f32,
    /// Components with fewer triangles than this fraction of the largest are dropped.
    pub min_component: f64,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            resolution: 256,
            threshold: 25.0,
            min_component: 0.01,
        }
    }
}

/// The field's surface and each vertex's albedo (sRGB).
pub fn extract(
    field: &GpuField,
    settings: &ExportSettings,
) -> Result<(TriangleMesh, Vec<[f32; 3]>)> {
    let n = settings.resolution;
    if n < 8 {
        return Err(Error::Input(format!(
            "--resolution {n}: use at least 8 grid points per side"
        )));
    }
    let density = field.density_grid(n)?;
    let r = field.config.radius;
    let mut mesh = Grid {
        values: &density,
        dims: [n as usize; 3],
        min: [-r; 3],
        max: [r; 3],
    }
    .isosurface(settings.threshold);
    mesh.weld();
    mesh.remove_small_components(settings.min_component);
    if mesh.triangles.is_empty() {
        let peak = density.iter().copied().fold(f32::MIN, f32::max);
        return Err(Error::Input(format!(
            "nothing in the field reaches density {} (its highest is {peak:.3}): export with a lower --threshold, e.g. --threshold {:.3}",
            settings.threshold,
            peak * 0.5
        )));
    }
    let colors = albedo(field, &mesh.positions)?;
    Ok((mesh, colors))
}

/// The field's albedo (sRGB) at `points`, queried in slices that keep GPU buffers small.
fn albedo(field: &GpuField, points: &[[f32; 3]]) -> Result<Vec<[f32; 3]>> {
    const SLICE: usize = 1 << 20;
    let mut colors = Vec::with_capacity(points.len());
    for slice in points.chunks(SLICE) {
        colors.extend(field.query(slice)?.into_iter().map(|v| [v[0], v[1], v[2]]));
    }
    Ok(colors)
}

/// The surface unwrapped onto a `side`×`side` atlas and the field's albedo baked into it.
pub fn bake_texture(
    field: &GpuField,
    mesh: &TriangleMesh,
    side: u32,
) -> Result<(Atlas, image::RgbImage)> {
    let atlas = atlas::unwrap(mesh, side)?;
    let points: Vec<[f32; 3]> = atlas.texels.iter().map(|&(_, p)| p).collect();
    let image = atlas.bake(&albedo(field, &points)?)?;
    Ok((atlas, image))
}
