//! Binary glTF 2.0 (`.glb`) of a coloured triangle mesh, as every viewer expects it: Y up (our
//! world is Z up), centred, unit-sized, vertex colours in linear space on an unlit material,
//! 4-byte-aligned buffer views, POSITION bounds, and the run's metadata in `extras`.

use super::TriangleMesh;
use crate::error::{Error, Result};
use gltf_json as json;
use json::validation::Checked::Valid;
use json::validation::USize64;
use std::collections::BTreeMap;
use std::path::Path;

/// glTF's `asset.generator`.
pub const GENERATOR: &str = concat!("dream3d ", env!("CARGO_PKG_VERSION"));

/// What to write besides the geometry.
pub struct GlbContents<'a> {
    pub mesh: &'a TriangleMesh,
    /// Per-vertex albedo in sRGB [0, 1].
    pub colors: Option<&'a [[f32; 3]]>,
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
    let normals: Vec<[f32; 3]> = mesh.vertex_normals().into_iter().map(y_up).collect();

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
    let mut view = |root: &mut json::Root, bytes: &[u8], target: json::buffer::Target| {
        let offset = bin.len();
        bin.extend_from_slice(bytes);
        bin.resize(bin.len().next_multiple_of(4), 0);
        root.push(json::buffer::View {
            buffer: json::Index::new(0),
            byte_length: USize64::from(bytes.len()),
            byte_offset: Some(USize64::from(offset)),
            byte_stride: None,
            name: None,
            target: Some(Valid(target)),
            extensions: None,
            extras: Default::default(),
        })
    };
    let vec3_accessor = |root: &mut json::Root,
                         view: json::Index<json::buffer::View>,
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
            type_: Valid(json::accessor::Type::Vec3),
            min: min_max.map(|(lo, _)| serde_json::json!(lo)),
            max: min_max.map(|(_, hi)| serde_json::json!(hi)),
            name: None,
            normalized: false,
            sparse: None,
        })
    };
    let array = json::buffer::Target::ArrayBuffer;
    let n = positions.len();
    let position_view = view(&mut root, bytemuck::cast_slice(&positions), array);
    let position = vec3_accessor(&mut root, position_view, n, Some(bounds(&positions)));
    let normal_view = view(&mut root, bytemuck::cast_slice(&normals), array);
    let normal = vec3_accessor(&mut root, normal_view, n, None);
    let mut attributes = BTreeMap::from([
        (Valid(json::mesh::Semantic::Positions), position),
        (Valid(json::mesh::Semantic::Normals), normal),
    ]);
    if let Some(colors) = contents.colors {
        if colors.len() != n {
            return Err(Error::Input(format!(
                "{} vertex colours for {n} vertices",
                colors.len()
            )));
        }
        let linear: Vec<[f32; 3]> = colors
            .iter()
            .map(|c| c.map(|v| srgb_to_linear(v.clamp(0.0, 1.0))))
            .collect();
        let color_view = view(&mut root, bytemuck::cast_slice(&linear), array);
        let color = vec3_accessor(&mut root, color_view, n, None);
        attributes.insert(Valid(json::mesh::Semantic::Colors(0)), color);
    }
    let index_view = view(
        &mut root,
        bytemuck::cast_slice(&mesh.triangles),
        json::buffer::Target::ElementArrayBuffer,
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
