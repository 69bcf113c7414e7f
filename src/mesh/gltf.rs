//! Binary glTF 2.0 (`.glb`) of a coloured triangle mesh, as every viewer expects it: Y up (our
//! world is Z up), centred, unit-sized, albedo as linear vertex colours or an embedded sRGB
//! PNG texture on an unlit material, 4-byte-aligned buffer views, POSITION bounds, and the
//! run's metadata in `extras`.

use super::TriangleMesh;
use crate::error::{Error, Result};
use gltf_json as json;
use json::validation::Checked::Valid;
use json::validation::USize64;
use std::collections::BTreeMap;
use std::path::Path;

/// glTF's `asset.generator`.
pub const GENERATOR: &str = concat!("dream3d ", env!("CARGO_PKG_VERSION"));

/// How the surface is coloured.
pub enum Surface<'a> {
    /// Geometry only.
    Plain,
    /// Per-vertex albedo in sRGB [0, 1].
    VertexColors(&'a [[f32; 3]]),
    /// Albedo baked into an sRGB image, with per-vertex texture coordinates.
    Texture {
        uvs: &'a [[f32; 2]],
        image: &'a image::RgbImage,
    },
}

/// What to write.
pub struct GlbContents<'a> {
    pub mesh: &'a TriangleMesh,
    /// Unit vertex normals (Z up), one per vertex: split vertices of a texture atlas keep
    /// those of the surface they were cut from.
    pub normals: &'a [[f32; 3]],
    pub surface: Surface<'a>,
    /// Stored in the document's `extras` (settings, seeds, source run).
    pub metadata: serde_json::Value,
}

/// Z-up (x, y, z) → Y-up (x, z, −y).
fn y_up(p: [f32; 3]) -> [f32; 3] {
    [p[0], p[2], -p[1]]
}

/// sRGB-encoded → linear (glTF vertex colours are linear).
fn srgb_to_linear(c: f32) -> f32 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

fn bounds(points: &[[f32; 3]]) -> ([f32; 3], [f32; 3]) {
    points
        .iter()
        .fold(([f32::MAX; 3], [f32::MIN; 3]), |(lo, hi), p| {
            (
                std::array::from_fn(|k| lo[k].min(p[k])),
                std::array::from_fn(|k| hi[k].max(p[k])),
            )
        })
}

/// The GLB bytes.
pub fn to_glb(contents: &GlbContents) -> Result<Vec<u8>> {
    let mesh = contents.mesh;
    if mesh.triangles.is_empty() {
        return Err(Error::Input("the mesh has no triangles".into()));
    }
    // Y up, centred on its bounding box, largest side 1.
    let turned: Vec<[f32; 3]> = mesh.positions.iter().map(|&p| y_up(p)).collect();
    let (lo, hi) = bounds(&turned);
    let centre: [f32; 3] = std::array::from_fn(|k| 0.5 * (lo[k] + hi[k]));
    let size = (0..3)
        .map(|k| hi[k] - lo[k])
        .fold(0f32, f32::max)
        .max(f32::EPSILON);
    let positions: Vec<[f32; 3]> = turned
        .iter()
        .map(|p| std::array::from_fn(|k| (p[k] - centre[k]) / size))
        .collect();
    let n = positions.len();
    for (what, count) in
        [("normals", contents.normals.len())]
            .into_iter()
            .chain(match contents.surface {
                Surface::Plain => None,
                Surface::VertexColors(c) => Some(("vertex colours", c.len())),
                Surface::Texture { uvs, .. } => Some(("texture coordinates", uvs.len())),
            })
    {
        if count != n {
            return Err(Error::Input(format!("{count} {what} for {n} vertices")));
        }
    }
    let normals: Vec<[f32; 3]> = contents.normals.iter().map(|&v| y_up(v)).collect();

    let mut root = json::Root {
        asset: json::Asset {
            generator: Some(GENERATOR.into()),
            version: "2.0".into(),
            ..Default::default()
        },
        extras: Some(
            serde_json::value::to_raw_value(&contents.metadata).expect("metadata serialises"),
        ),
        ..Default::default()
    };
    let mut bin: Vec<u8> = vec![];
    let mut view = |root: &mut json::Root, bytes: &[u8], target: Option<json::buffer::Target>| {
        let offset = bin.len();
        bin.extend_from_slice(bytes);
        bin.resize(bin.len().next_multiple_of(4), 0);
        root.push(json::buffer::View {
            buffer: json::Index::new(0),
            byte_length: USize64::from(bytes.len()),
            byte_offset: Some(USize64::from(offset)),
            byte_stride: None,
            name: None,
            target: target.map(Valid),
            extensions: None,
            extras: Default::default(),
        })
    };
    let float_accessor = |root: &mut json::Root,
                          view: json::Index<json::buffer::View>,
                          type_: json::accessor::Type,
                          count: usize,
                          min_max: Option<([f32; 3], [f32; 3])>| {
        root.push(json::Accessor {
            buffer_view: Some(view),
            byte_offset: None,
            count: USize64::from(count),
            component_type: Valid(json::accessor::GenericComponentType(
                json::accessor::ComponentType::F32,
            )),
            extensions: None,
            extras: Default::default(),
            type_: Valid(type_),
            min: min_max.map(|(lo, _)| serde_json::json!(lo)),
            max: min_max.map(|(_, hi)| serde_json::json!(hi)),
            name: None,
            normalized: false,
            sparse: None,
        })
    };
    let array = Some(json::buffer::Target::ArrayBuffer);
    let vec3 = json::accessor::Type::Vec3;
    let position_view = view(&mut root, bytemuck::cast_slice(&positions), array);
    let position = float_accessor(&mut root, position_view, vec3, n, Some(bounds(&positions)));
    let normal_view = view(&mut root, bytemuck::cast_slice(&normals), array);
    let normal = float_accessor(&mut root, normal_view, vec3, n, None);
    let mut attributes = BTreeMap::from([
        (Valid(json::mesh::Semantic::Positions), position),
        (Valid(json::mesh::Semantic::Normals), normal),
    ]);
    let mut base_color_texture = None;
    match contents.surface {
        Surface::Plain => {}
        Surface::VertexColors(colors) => {
            let linear: Vec<[f32; 3]> = colors
                .iter()
                .map(|c| c.map(|v| srgb_to_linear(v.clamp(0.0, 1.0))))
                .collect();
            let color_view = view(&mut root, bytemuck::cast_slice(&linear), array);
            let color = float_accessor(&mut root, color_view, vec3, n, None);
            attributes.insert(Valid(json::mesh::Semantic::Colors(0)), color);
        }
        Surface::Texture { uvs, image } => {
            let uv_view = view(&mut root, bytemuck::cast_slice(uvs), array);
            let uv = float_accessor(&mut root, uv_view, json::accessor::Type::Vec2, n, None);
            attributes.insert(Valid(json::mesh::Semantic::TexCoords(0)), uv);
            let png = crate::imaging::png_bytes(image)?;
            let image_view = view(&mut root, &png, None);
            let source = root.push(json::Image {
                buffer_view: Some(image_view),
                mime_type: Some(json::image::MimeType("image/png".into())),
                name: Some("albedo".into()),
                uri: None,
                extensions: None,
                extras: Default::default(),
            });
            // Charts are padded: clamping keeps lookups at the atlas border inside it.
            let clamp = Valid(json::texture::WrappingMode::ClampToEdge);
            let sampler = root.push(json::texture::Sampler {
                mag_filter: Some(Valid(json::texture::MagFilter::Linear)),
                min_filter: Some(Valid(json::texture::MinFilter::LinearMipmapLinear)),
                name: None,
                wrap_s: clamp,
                wrap_t: clamp,
                extensions: None,
                extras: Default::default(),
            });
            let texture = root.push(json::Texture {
                name: None,
                sampler: Some(sampler),
                source,
                extensions: None,
                extras: Default::default(),
            });
            base_color_texture = Some(json::texture::Info {
                index: texture,
                tex_coord: 0,
                extensions: None,
                extras: Default::default(),
            });
        }
    }
    let index_view = view(
        &mut root,
        bytemuck::cast_slice(&mesh.triangles),
        Some(json::buffer::Target::ElementArrayBuffer),
    );
    let indices = root.push(json::Accessor {
        buffer_view: Some(index_view),
        byte_offset: None,
        count: USize64::from(3 * mesh.triangles.len()),
        component_type: Valid(json::accessor::GenericComponentType(
            json::accessor::ComponentType::U32,
        )),
        extensions: None,
        extras: Default::default(),
        type_: Valid(json::accessor::Type::Scalar),
        min: None,
        max: None,
        name: None,
        normalized: false,
        sparse: None,
    });
    // Colours are the albedo the field learned: shown as they are, without lighting.
    let material = root.push(json::Material {
        pbr_metallic_roughness: json::material::PbrMetallicRoughness {
            metallic_factor: json::material::StrengthFactor(0.0),
            roughness_factor: json::material::StrengthFactor(1.0),
            base_color_texture,
            ..Default::default()
        },
        extensions: Some(json::extensions::material::Material {
            unlit: Some(json::extensions::material::Unlit {}),
        }),
        ..Default::default()
    });
    root.extensions_used.push("KHR_materials_unlit".into());
    let mesh_index = root.push(json::Mesh {
        extensions: None,
        extras: Default::default(),
        name: Some("dream3d".into()),
        primitives: vec![json::mesh::Primitive {
            attributes,
            extensions: None,
            extras: Default::default(),
            indices: Some(indices),
            material: Some(material),
            mode: Valid(json::mesh::Mode::Triangles),
            targets: None,
        }],
        weights: None,
    });
    let node = root.push(json::Node {
        mesh: Some(mesh_index),
        ..Default::default()
    });
    let scene = root.push(json::Scene {
        extensions: None,
        extras: Default::default(),
        name: None,
        nodes: vec![node],
    });
    root.scene = Some(scene);
    root.push(json::Buffer {
        byte_length: USize64::from(bin.len()),
        name: None,
        uri: None,
        extensions: None,
        extras: Default::default(),
    });

    let mut doc = json::serialize::to_vec(&root).map_err(|e| Error::Input(format!("glTF: {e}")))?;
    doc.resize(doc.len().next_multiple_of(4), b' ');
    let total = 12 + 8 + doc.len() + 8 + bin.len();
    let mut glb = Vec::with_capacity(total);
    glb.extend_from_slice(b"glTF");
    glb.extend_from_slice(&2u32.to_le_bytes());
    glb.extend_from_slice(&(total as u32).to_le_bytes());
    glb.extend_from_slice(&(doc.len() as u32).to_le_bytes());
    glb.extend_from_slice(b"JSON");
    glb.extend_from_slice(&doc);
    glb.extend_from_slice(&(bin.len() as u32).to_le_bytes());
    glb.extend_from_slice(b"BIN\0");
    glb.extend_from_slice(&bin);
    Ok(glb)
}

/// Writes the GLB atomically.
pub fn write_glb(path: &Path, contents: &GlbContents) -> Result<()> {
    let bytes = to_glb(contents)?;
    crate::files::write_atomic(path, &bytes)
}
