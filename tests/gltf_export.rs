//! `dream3d export`: a field's surface as glTF 2.0 that the Khronos validator accepts with no
//! errors or warnings, that reads back identically with the `gltf` crate, that three.js shows
//! upright and in its colours in a browser, and the errors for bad input.

mod common;

use dream3d::field::FieldConfig;
use dream3d::gpu::{GpuContext, GpuField};
use dream3d::mesh::export::{bake_texture, extract, ExportSettings};
use dream3d::mesh::gltf::{write_glb, GlbContents, Surface};
use dream3d::mesh::TriangleMesh;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

fn small_config() -> FieldConfig {
    FieldConfig {
        levels: 4,
        log2_table_size: 12,
        base_resolution: 4,
        per_level_scale: 2.0,
        hidden: 16,
        ..FieldConfig::default()
    }
}

/// A freshly initialised field: its density is the blob bias, a ball of radius ≈ 0.25 at σ = 5.
fn field_checkpoint(dir: &Path) -> (PathBuf, GpuField) {
    let config = small_config();
    let ctx = Arc::new(GpuContext::new().expect("a wgpu adapter"));
    let field = GpuField::new(ctx, config.clone(), &config.init_params(3)).unwrap();
    let path = dir.join("field.safetensors");
    field.save(&path).unwrap();
    (path, field)
}

fn export(dir: &Path, args: &[&str]) -> Output {
    common::dream3d(dir)
        .arg("export")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn exports_validate_and_read_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (checkpoint, field) = field_checkpoint(dir.path());
    let settings = ExportSettings {
        resolution: 48,
        threshold: 5.0,
        ..ExportSettings::default()
    };
    let (mesh, colors) = extract(&field, &settings).unwrap();
    let topo = mesh.topology();
    assert!(
        topo.is_watertight() && topo.euler_characteristic() == 2,
        "{topo:?}"
    );

    let (atlas, texture) = bake_texture(&field, &mesh, 64).unwrap();

    for (name, extra) in [
        ("colour.glb", &[][..]),
        ("plain.glb", &["--no-color"][..]),
        ("texture.glb", &["--texture", "64"][..]),
    ] {
        let mut args = vec![
            checkpoint.to_str().unwrap(),
            "-o",
            name,
            "--resolution",
            "48",
            "--threshold",
            "5",
        ];
        args.extend(extra);
        let out = export(dir.path(), &args);
        common::assert_success(&out);
        let glb = dir.path().join(name);
        let issues = common::validate_gltf(&glb);
        assert_eq!(issues["numErrors"], 0, "{name}: {issues}");
        assert_eq!(issues["numWarnings"], 0, "{name}: {issues}");

        let (doc, buffers, images) = gltf::import(&glb).unwrap();
        assert_eq!(
            doc.as_json().asset.generator.as_deref(),
            Some(dream3d::mesh::gltf::GENERATOR)
        );
        assert!(doc.as_json().extras.is_some(), "run metadata in extras");
        let primitive = doc.meshes().next().unwrap().primitives().next().unwrap();
        let reader = primitive.reader(|b| Some(&buffers[b.index()]));
        let written = if name == "texture.glb" {
            &atlas.mesh
        } else {
            &mesh
        };
        let positions: Vec<[f32; 3]> = reader.read_positions().unwrap().collect();
        let indices: Vec<u32> = reader.read_indices().unwrap().into_u32().collect();
        assert_eq!(positions.len(), written.positions.len());
        assert_eq!(
            indices,
            written
                .triangles
                .iter()
                .flatten()
                .copied()
                .collect::<Vec<_>>()
        );
        // Y up, centred, unit-sized: our (x, y, z) is glTF's (x, z, −y) up to centre and scale.
        let turned: Vec<[f32; 3]> = written
            .positions
            .iter()
            .map(|p| [p[0], p[2], -p[1]])
            .collect();
        let lo: Vec<f32> = (0..3)
            .map(|k| turned.iter().map(|p| p[k]).fold(f32::MAX, f32::min))
            .collect();
        let hi: Vec<f32> = (0..3)
            .map(|k| turned.iter().map(|p| p[k]).fold(f32::MIN, f32::max))
            .collect();
        let size = (0..3).map(|k| hi[k] - lo[k]).fold(0f32, f32::max);
        for (got, want) in positions.iter().zip(&turned) {
            for k in 0..3 {
                let expect = (want[k] - 0.5 * (lo[k] + hi[k])) / size;
                assert!((got[k] - expect).abs() < 1e-6);
            }
        }
        match (extra, reader.read_colors(0), reader.read_tex_coords(0)) {
            ([], Some(c), None) => {
                let linear: Vec<[f32; 3]> = c.into_rgb_f32().collect();
                for (l, s) in linear.iter().zip(&colors) {
                    for k in 0..3 {
                        let srgb = if l[k] <= 0.0031308 {
                            12.92 * l[k]
                        } else {
                            1.055 * l[k].powf(1.0 / 2.4) - 0.055
                        };
                        assert!((srgb - s[k]).abs() < 1e-4);
                    }
                }
            }
            (["--no-color"], None, None) => assert!(images.is_empty()),
            (["--texture", _], None, Some(uvs)) => {
                let uvs: Vec<[f32; 2]> = uvs.into_f32().collect();
                assert_eq!(uvs, atlas.uvs);
                assert_eq!(images.len(), 1);
                assert_eq!((images[0].width, images[0].height), (64, 64));
                assert_eq!(images[0].pixels, texture.as_raw().as_slice());
                // The texture at a triangle's centroid shows the field's albedo there.
                let centroids: Vec<[f32; 3]> = atlas
                    .mesh
                    .triangles
                    .iter()
                    .map(|t| {
                        std::array::from_fn(|k| {
                            t.iter()
                                .map(|&v| atlas.mesh.positions[v as usize][k])
                                .sum::<f32>()
                                / 3.0
                        })
                    })
                    .collect();
                let albedo = field.query(&centroids).unwrap();
                for (t, want) in atlas.mesh.triangles.iter().zip(&albedo) {
                    let uv: [f32; 2] = std::array::from_fn(|k| {
                        t.iter().map(|&v| uvs[v as usize][k]).sum::<f32>() / 3.0
                    });
                    let texel = texture.get_pixel((uv[0] * 64.0) as u32, (uv[1] * 64.0) as u32);
                    for k in 0..3 {
                        let got = texel[k] as f32 / 255.0;
                        assert!((got - want[k]).abs() < 0.03, "{texel:?} vs {want:?}");
                    }
                }
            }
            _ => panic!("{name}: unexpected attributes"),
        }
    }
}

#[test]
fn bad_exports_are_explained_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (checkpoint, _) = field_checkpoint(dir.path());
    let ckpt = checkpoint.to_str().unwrap();
    // The blob's peak density is ≈ 10, below the default threshold of 25.
    let out = export(dir.path(), &[ckpt, "-o", "empty.glb", "--resolution", "32"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("lower --threshold"),
        "{err}"
    );
    assert!(!dir.path().join("empty.glb").exists());

    std::fs::write(dir.path().join("taken.glb"), b"x").unwrap();
    let out = export(dir.path(), &[ckpt, "-o", "taken.glb", "--threshold", "5"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));

    std::fs::write(dir.path().join("a-file"), b"").unwrap();
    let out = export(
        dir.path(),
        &[ckpt, "-o", "a-file/out.glb", "--threshold", "5"],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot write"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn turntables_orbit_the_object_into_frames_and_a_gif() {
    use image::AnimationDecoder;
    let dir = tempfile::tempdir().unwrap();
    let (checkpoint, _) = field_checkpoint(dir.path());
    let out = common::dream3d(dir.path())
        .args([
            "render",
            checkpoint.to_str().unwrap(),
            "--turntable",
            "-o",
            "spin",
        ])
        .args(["--frames", "6", "--size", "24"])
        .output()
        .unwrap();
    common::assert_success(&out);
    let spin = dir.path().join("spin");
    for i in 0..6 {
        let frame = image::open(spin.join(format!("frame_{i:04}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(frame.dimensions(), (24, 24));
        // The blob sits in the middle, darker than the white background at the corner.
        let (centre, corner) = (frame.get_pixel(12, 12)[0], frame.get_pixel(0, 0)[0]);
        assert!(
            centre < corner && corner == 255,
            "frame {i}: centre {centre}, corner {corner}"
        );
    }
    let gif = std::fs::File::open(spin.join("turntable.gif")).unwrap();
    let decoder = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(gif)).unwrap();
    assert_eq!(decoder.into_frames().count(), 6);
}

/// An upright ellipsoid (semi-axes 0.25, 0.25, 0.5 with z up) on a 64³ grid, red above its
/// equator and blue below.
fn red_over_blue() -> (TriangleMesh, impl Fn([f32; 3]) -> [f32; 3]) {
    let mesh = common::analytic_surface(64, |p| {
        let q = [p[0] / 0.25, p[1] / 0.25, p[2] / 0.5];
        1.0 - (q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).sqrt()
    });
    let color = |p: [f32; 3]| {
        if p[2] > 0.0 {
            [1.0, 0.0, 0.0]
        } else {
            [0.0, 0.0, 1.0]
        }
    };
    (mesh, color)
}

/// three.js' GLTFLoader in headless Chromium (`tests/js/render_glb.mjs`): an orthographic
/// view along −Z framing [−0.75, 0.75]² with Y up, on black.
fn browser_view(glb: &Path, size: u32) -> image::RgbImage {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/three").is_dir() && Path::new("/usr/bin/chromium").exists(),
        "the browser check needs npm ci --prefix tests/js and Debian's chromium (scripts/test installs both)"
    );
    let png = glb.with_extension("png");
    let out = Command::new("node")
        .arg(js.join("render_glb.mjs"))
        .arg(glb)
        .arg(&png)
        .arg(size.to_string())
        .output()
        .expect("node (Node.js) on the PATH");
    common::assert_success(&out);
    image::open(&png).unwrap().to_rgb8()
}

#[test]
fn browsers_show_exports_upright_and_in_their_colours() {
    let dir = tempfile::tempdir().unwrap();
    let (mesh, color) = red_over_blue();
    let normals = mesh.vertex_normals();
    let colors: Vec<[f32; 3]> = mesh.positions.iter().map(|&p| color(p)).collect();
    let atlas = dream3d::mesh::atlas::unwrap(&mesh, 256).unwrap();
    let texels: Vec<[f32; 3]> = atlas.texels.iter().map(|&(_, p)| color(p)).collect();
    let texture = atlas.bake(&texels).unwrap();
    let atlas_normals: Vec<[f32; 3]> = atlas.source.iter().map(|&v| normals[v as usize]).collect();
    let files = [
        (
            "vertex-colours.glb",
            GlbContents {
                mesh: &mesh,
                normals: &normals,
                surface: Surface::VertexColors(&colors),
                metadata: serde_json::json!({}),
            },
        ),
        (
            "texture.glb",
            GlbContents {
                mesh: &atlas.mesh,
                normals: &atlas_normals,
                surface: Surface::Texture {
                    uvs: &atlas.uvs,
                    image: &texture,
                },
                metadata: serde_json::json!({}),
            },
        ),
    ];
    let size = 256;
    for (name, contents) in &files {
        let glb = dir.path().join(name);
        write_glb(&glb, contents).unwrap();
        let view = browser_view(&glb, size);
        assert_eq!(view.dimensions(), (size, size));
        // The object's pixels: unit height (1/1.5 of the frame), half as wide, centred.
        let lit: Vec<(u32, u32)> = view
            .enumerate_pixels()
            .filter(|(_, _, px)| px.0.iter().any(|&c| c > 32))
            .map(|(x, y, _)| (x, y))
            .collect();
        let (x0, x1) = (lit.iter().map(|p| p.0).min(), lit.iter().map(|p| p.0).max());
        let (y0, y1) = (lit.iter().map(|p| p.1).min(), lit.iter().map(|p| p.1).max());
        let (width, height) = (x1.unwrap() - x0.unwrap() + 1, y1.unwrap() - y0.unwrap() + 1);
        let expect = size as f32 / 1.5;
        assert!(
            (height as f32 - expect).abs() <= 3.0 && (width as f32 - expect / 2.0).abs() <= 3.0,
            "{name}: {width}×{height} pixels, expected {}×{expect}",
            expect / 2.0
        );
        assert!(
            (x0.unwrap() + x1.unwrap()).abs_diff(size - 1) <= 2,
            "{name}: off centre"
        );
        // Upright: red above, blue below, and exactly those colours (unlit, sRGB).
        for (y, want) in [
            (size / 2 - size / 6, [255, 0, 0]),
            (size / 2 + size / 6, [0, 0, 255]),
        ] {
            let got = view.get_pixel(size / 2, y).0;
            assert!(
                got.iter().zip(want).all(|(&g, w)| g.abs_diff(w) <= 3),
                "{name}: pixel at row {y} is {got:?}, expected {want:?}"
            );
        }
        assert_eq!(
            view.get_pixel(2, 2).0,
            [0, 0, 0],
            "{name}: black background"
        );
    }
}

#[test]
fn mesh_turntables_match_the_projected_geometry() {
    use dream3d::gpu::mesh_preview::view_projection;
    use dream3d::turntable::Turntable;
    let dir = tempfile::tempdir().unwrap();
    let (mesh, color) = red_over_blue();
    let colors: Vec<[f32; 3]> = mesh.positions.iter().map(|&p| color(p)).collect();
    let glb = dir.path().join("object.glb");
    write_glb(
        &glb,
        &GlbContents {
            mesh: &mesh,
            normals: &mesh.vertex_normals(),
            surface: Surface::VertexColors(&colors),
            metadata: serde_json::json!({}),
        },
    )
    .unwrap();
    let atlas = dream3d::mesh::atlas::unwrap(&mesh, 128).unwrap();
    let texels: Vec<[f32; 3]> = atlas.texels.iter().map(|&(_, p)| color(p)).collect();
    let normals = mesh.vertex_normals();
    write_glb(
        &dir.path().join("textured.glb"),
        &GlbContents {
            mesh: &atlas.mesh,
            normals: &atlas
                .source
                .iter()
                .map(|&v| normals[v as usize])
                .collect::<Vec<_>>(),
            surface: Surface::Texture {
                uvs: &atlas.uvs,
                image: &atlas.bake(&texels).unwrap(),
            },
            metadata: serde_json::json!({}),
        },
    )
    .unwrap();
    // Read back into our Z-up world: the same ellipsoid, centred and unit-sized.
    let parts = dream3d::mesh::load::read_asset(&glb).unwrap();
    assert_eq!(parts.len(), 1);
    let lo: [f32; 3] =
        std::array::from_fn(|k| mesh.positions.iter().map(|p| p[k]).fold(f32::MAX, f32::min));
    let hi: [f32; 3] =
        std::array::from_fn(|k| mesh.positions.iter().map(|p| p[k]).fold(f32::MIN, f32::max));
    let scale = (0..3).map(|k| hi[k] - lo[k]).fold(0f32, f32::max);
    for (got, want) in parts[0].positions.iter().zip(&mesh.positions) {
        let want: [f32; 3] = std::array::from_fn(|k| (want[k] - 0.5 * (lo[k] + hi[k])) / scale);
        assert!(
            (0..3).all(|k| (got[k] - want[k]).abs() < 1e-6),
            "{got:?} vs {want:?}"
        );
    }
    let mesh = TriangleMesh {
        positions: parts[0].positions.clone(),
        triangles: mesh.triangles.clone(),
    };

    let (frames, size) = (4, 96);
    for name in ["object", "textured"] {
        let out = common::dream3d(dir.path())
            .args(["render", &format!("{name}.glb"), "--turntable", "-o", name])
            .args(["--frames", &frames.to_string(), "--size", &size.to_string()])
            .output()
            .unwrap();
        common::assert_success(&out);
        let turntable = Turntable {
            frames,
            size,
            ..Turntable::default()
        };
        for i in 0..frames {
            let frame = image::open(dir.path().join(format!("{name}/frame_{i:04}.png")))
                .unwrap()
                .to_rgb8();
            // CPU reference: the vertices' projected bounding box is the object's on screen.
            let m = view_projection(&turntable.camera(i));
            let pixel = |p: [f32; 3]| {
                let clip = m * nalgebra::Vector4::new(p[0] as f64, p[1] as f64, p[2] as f64, 1.0);
                let ndc = clip.xyz() / clip.w;
                [
                    (ndc.x + 1.0) * 0.5 * size as f64,
                    (1.0 - ndc.y) * 0.5 * size as f64,
                ]
            };
            let projected: Vec<[f64; 2]> = mesh.positions.iter().map(|&p| pixel(p)).collect();
            let drawn: Vec<(u32, u32)> = frame
                .enumerate_pixels()
                .filter(|(_, _, px)| px.0 != [255, 255, 255])
                .map(|(x, y, _)| (x, y))
                .collect();
            for k in 0..2 {
                let lo = projected.iter().map(|p| p[k]).fold(f64::MAX, f64::min);
                let hi = projected.iter().map(|p| p[k]).fold(f64::MIN, f64::max);
                let coord = |p: &(u32, u32)| if k == 0 { p.0 } else { p.1 } as f64;
                let first = drawn.iter().map(coord).fold(f64::MAX, f64::min);
                let last = drawn.iter().map(coord).fold(f64::MIN, f64::max) + 1.0;
                assert!(
                (first - lo).abs() < 1.5 && (last - hi).abs() < 1.5,
                "{name} frame {i}, axis {k}: drawn [{first}, {last}), projected [{lo:.2}, {hi:.2}]"
            );
            }
            // Red above the equator, blue below: upright.
            for (z, red) in [(0.25f32, true), (-0.25, false)] {
                let [x, y] = pixel([0.0, 0.0, z]);
                let px = frame.get_pixel(x as u32, y as u32).0;
                let (r, b) = (px[0] as i32, px[2] as i32);
                assert!(
                    px[1] < 40
                        && if red {
                            r > 150 && b < 40
                        } else {
                            b > 150 && r < 40
                        },
                    "{name} frame {i}, z = {z}: {px:?}"
                );
            }
        }
    }
}
