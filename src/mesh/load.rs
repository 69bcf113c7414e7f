//! glTF assets read back for previews: every triangle primitive of the default scene with its
//! node transforms applied, turned into our Z-up world, with the albedo its material and
//! vertex colours give.

use super::TriangleMesh;
use crate::error::{Error, Result};
use nalgebra::{Matrix3, Matrix4, Vector3, Vector4};
use std::path::Path;

/// One primitive, ready to draw.
#[derive(Debug, Clone)]
pub struct Part {
    /// Z up.
    pub positions: Vec<[f32; 3]>,
    pub normals: Vec<[f32; 3]>,
    /// Linear RGBA: COLOR_0 times the material's base colour factor.
    pub colors: Vec<[f32; 4]>,
    pub uvs: Vec<[f32; 2]>,
    pub triangles: Vec<[u32; 3]>,
    /// The base colour texture (sRGB).
    pub texture: Option<image::RgbaImage>,
}

/// glTF's Y up → our Z up: (x, y, z) → (x, −z, y), the inverse of the export's turn.
const Z_UP: Matrix4<f32> = Matrix4::new(
    1.0, 0.0, 0.0, 0.0, //
    0.0, 0.0, -1.0, 0.0, //
    0.0, 1.0, 0.0, 0.0, //
    0.0, 0.0, 0.0, 1.0,
);

/// Reads a `.glb` or `.gltf` file.
pub fn read_asset(path: &Path) -> Result<Vec<Part>> {
    let (doc, buffers, images) = gltf::import(path).map_err(|e| {
        Error::Input(format!(
            "{}: not a readable glTF file ({e})",
            path.display()
        ))
    })?;
    let scene = doc
        .default_scene()
        .or_else(|| doc.scenes().next())
        .ok_or_else(|| Error::Input(format!("{}: the glTF file has no scene", path.display())))?;
    let mut parts = vec![];
    let mut stack: Vec<(gltf::Node, Matrix4<f32>)> =
        scene.nodes().map(|node| (node, Z_UP)).collect();
    while let Some((node, parent)) = stack.pop() {
        let local = Matrix4::from_column_slice(node.transform().matrix().as_flattened());
        let world = parent * local;
        if let Some(mesh) = node.mesh() {
            for primitive in mesh.primitives() {
                if primitive.mode() == gltf::mesh::Mode::Triangles {
                    parts.push(read_primitive(&primitive, &buffers, &images, &world)?);
                }
            }
        }
        stack.extend(node.children().map(|child| (child, world)));
    }
    if parts.is_empty() {
        return Err(Error::Input(format!(
            "{}: the scene has no triangles to show",
            path.display()
        )));
    }
    Ok(parts)
}

fn read_primitive(
    primitive: &gltf::Primitive,
    buffers: &[gltf::buffer::Data],
    images: &[gltf::image::Data],
    world: &Matrix4<f32>,
) -> Result<Part> {
    let reader = primitive.reader(|b| Some(&buffers[b.index()]));
    let positions: Vec<[f32; 3]> = reader
        .read_positions()
        .ok_or_else(|| Error::Input("a primitive has no POSITION".into()))?
        .map(|p| {
            let q = world * Vector4::new(p[0], p[1], p[2], 1.0);
            [q.x, q.y, q.z]
        })
        .collect();
    let n = positions.len();
    let triangles: Vec<[u32; 3]> = match reader.read_indices() {
        Some(indices) => indices
            .into_u32()
            .collect::<Vec<_>>()
            .chunks_exact(3)
            .map(|t| [t[0], t[1], t[2]])
            .collect(),
        None => (0..n as u32 / 3)
            .map(|t| [3 * t, 3 * t + 1, 3 * t + 2])
            .collect(),
    };
    if triangles.iter().flatten().any(|&v| v as usize >= n) {
        return Err(Error::Input("a primitive indexes past its vertices".into()));
    }
    // Rotations and uniform scales: the upper 3×3 maps normals too, up to length.
    let turn: Matrix3<f32> = world.fixed_view::<3, 3>(0, 0).into();
    let normals = match reader.read_normals() {
        Some(normals) => normals
            .map(|v| {
                let m = (turn * Vector3::from(v)).normalize();
                [m.x, m.y, m.z]
            })
            .collect(),
        None => TriangleMesh {
            positions: positions.clone(),
            triangles: triangles.clone(),
        }
        .vertex_normals(),
    };
    let material = primitive.material().pbr_metallic_roughness();
    let factor = material.base_color_factor();
    let colors = match reader.read_colors(0) {
        Some(colors) => colors
            .into_rgba_f32()
            .map(|c| std::array::from_fn(|k| c[k] * factor[k]))
            .collect(),
        None => vec![factor; n],
    };
    let uvs = match reader.read_tex_coords(0) {
        Some(uvs) => uvs.into_f32().collect(),
        None => vec![[0.0; 2]; n],
    };
    let texture = material
        .base_color_texture()
        .map(|info| rgba(&images[info.texture().source().index()]))
        .transpose()?;
    Ok(Part {
        positions,
        normals,
        colors,
        uvs,
        triangles,
        texture,
    })
}

fn rgba(data: &gltf::image::Data) -> Result<image::RgbaImage> {
    use gltf::image::Format;
    let pixels: Vec<u8> = match data.format {
        Format::R8G8B8A8 => data.pixels.clone(),
        Format::R8G8B8 => data
            .pixels
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        Format::R8 => data.pixels.iter().flat_map(|&v| [v, v, v, 255]).collect(),
        Format::R8G8 => data
            .pixels
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        other => {
            return Err(Error::Input(format!(
                "base colour textures in {other:?} are not supported: use 8-bit PNG or JPEG"
            )))
        }
    };
    image::RgbaImage::from_raw(data.width, data.height, pixels)
        .ok_or_else(|| Error::Input("a texture's size does not match its pixels".into()))
}
