//! Mesh export timings on this machine's wgpu adapter: density grid on the GPU, isosurface,
//! clean-up, albedo queries (or texture baking) and the GLB, at a given grid resolution, for a
//! field whose surface is the initial density blob (a sphere, as a fresh `generate` run
//! starts), with its occupancy grid updated as training leaves it.
//!
//!     cargo run --release --example bench_export -- --resolution 256 [--texture 1024]

use anyhow::Result;
use dream3d::field::FieldConfig;
use dream3d::gpu::{GpuContext, GpuField};
use dream3d::mesh::export::{bake_texture, extract, ExportSettings};
use dream3d::mesh::gltf::{to_glb, GlbContents, Surface};
use std::sync::Arc;
use std::time::Instant;

mod common;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let resolution: u32 = common::arg(&args, "--resolution").map_or(Ok(256), |r| r.parse())?;
    let ctx = Arc::new(GpuContext::new()?);
    let config = FieldConfig::default();
    let mut field = GpuField::new(ctx.clone(), config.clone(), &config.init_params(0))?;
    for seed in 0..8 {
        field.update_occupancy(seed, 512, None, 0.95, 0.01)?;
    }
    println!(
        "occupied cells: {:.1}%",
        100.0 * field.occupancy.occupied_fraction()
    );
    let settings = ExportSettings {
        resolution,
        threshold: 5.0,
        ..ExportSettings::default()
    };
    let start = Instant::now();
    let (mesh, colors) = extract(&field, &settings)?;
    let extracted = start.elapsed().as_secs_f64();
    let normals = mesh.vertex_normals();
    let glb = match common::arg(&args, "--texture") {
        Some(side) => {
            let (atlas, image) = bake_texture(&field, &mesh, side.parse()?)?;
            let normals: Vec<[f32; 3]> =
                atlas.source.iter().map(|&v| normals[v as usize]).collect();
            println!("texture {side}²: {} charts", atlas.charts);
            to_glb(&GlbContents {
                mesh: &atlas.mesh,
                normals: &normals,
                surface: Surface::Texture {
                    uvs: &atlas.uvs,
                    image: &image,
                },
                metadata: serde_json::json!({}),
            })?
        }
        None => to_glb(&GlbContents {
            mesh: &mesh,
            normals: &normals,
            surface: Surface::VertexColors(&colors),
            metadata: serde_json::json!({}),
        })?,
    };
    let total = start.elapsed().as_secs_f64();
    println!(
        "{} | {resolution}³ | {:.2} s extract, {:.2} s total | {} vertices, {} triangles, {:.1} MB",
        ctx.describe(),
        extracted,
        total,
        mesh.positions.len(),
        mesh.triangles.len(),
        glb.len() as f64 / 1e6
    );
    Ok(())
}
