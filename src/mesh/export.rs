//! From a field to a mesh: density on a grid (GPU), isosurface, clean-up, albedo per vertex
//! or baked into a texture atlas.

use super::atlas::{self, Atlas};
use super::gltf::{write_glb, GlbContents, Surface};
use super::isosurface::Grid;
use super::TriangleMesh;
use crate::error::{Error, Result};
use crate::gpu::GpuField;

/// How the field's albedo is carried into the asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Albedo {
    /// Geometry only.
    None,
    /// Per-vertex colours.
    Vertex,
    /// Baked into a texture of this side over a UV atlas.
    Texture(u32),
}

/// Export settings (threestudio's isosurface threshold of 25 by default).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExportSettings {
    /// Grid points per side.
    pub resolution: u32,
    /// Density at the surface.
    pub threshold: f32,
    /// Components with fewer triangles than this fraction of the largest are dropped.
    pub min_component: f64,
    pub albedo: Albedo,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            resolution: 256,
            threshold: 25.0,
            min_component: 0.01,
            albedo: Albedo::Vertex,
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
pub fn albedo(field: &GpuField, points: &[[f32; 3]]) -> Result<Vec<[f32; 3]>> {
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

/// Extracts the field's surface and writes it as a GLB at `path` (atomically), its albedo as
/// `settings` say, with `metadata` plus the export settings and field configuration in
/// `extras`. Returns the mesh written.
pub fn export_glb(
    field: &GpuField,
    settings: &ExportSettings,
    path: &std::path::Path,
    mut metadata: serde_json::Value,
) -> Result<TriangleMesh> {
    let (mesh, colors) = extract(field, settings)?;
    metadata["export"] = serde_json::json!(settings);
    write_surface(field, mesh, &colors, settings.albedo, path, metadata)
}

/// Writes `mesh` (a surface made elsewhere, e.g. the mesh stage's) as a GLB at `path`
/// (atomically), with `field`'s albedo at its surface as `albedo` says and `metadata` plus the
/// field configuration in `extras`. Returns the mesh written.
pub fn export_mesh_glb(
    field: &GpuField,
    mesh: TriangleMesh,
    albedo_mode: Albedo,
    path: &std::path::Path,
    metadata: serde_json::Value,
) -> Result<TriangleMesh> {
    if mesh.triangles.is_empty() {
        return Err(Error::Input(format!(
            "{}: the surface has no triangles to export",
            path.display()
        )));
    }
    let colors = match albedo_mode {
        Albedo::Vertex => albedo(field, &mesh.positions)?,
        _ => vec![],
    };
    write_surface(field, mesh, &colors, albedo_mode, path, metadata)
}

/// `mesh` as a GLB with vertex `colors`, a texture baked from `field`, or neither.
fn write_surface(
    field: &GpuField,
    mesh: TriangleMesh,
    colors: &[[f32; 3]],
    albedo_mode: Albedo,
    path: &std::path::Path,
    mut metadata: serde_json::Value,
) -> Result<TriangleMesh> {
    metadata["field"] = serde_json::json!(field.config);
    let normals = mesh.vertex_normals();
    let contents = |mesh, normals, surface, metadata| GlbContents {
        mesh,
        normals,
        surface,
        metadata,
    };
    match albedo_mode {
        Albedo::Texture(side) => {
            let (atlas, image) = bake_texture(field, &mesh, side)?;
            metadata["texture"] = serde_json::json!({ "size": side, "charts": atlas.charts });
            let normals: Vec<[f32; 3]> =
                atlas.source.iter().map(|&v| normals[v as usize]).collect();
            let surface = Surface::Texture {
                uvs: &atlas.uvs,
                image: &image,
            };
            write_glb(path, &contents(&atlas.mesh, &normals, surface, metadata))?;
            Ok(atlas.mesh)
        }
        Albedo::Vertex | Albedo::None => {
            let surface = match albedo_mode {
                Albedo::Vertex => Surface::VertexColors(colors),
                _ => Surface::Plain,
            };
            write_glb(path, &contents(&mesh, &normals, surface, metadata))?;
            Ok(mesh)
        }
    }
}
