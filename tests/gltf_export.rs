//! `dream3d export`: a field's surface as glTF 2.0 that the Khronos validator accepts with no
//! errors or warnings, that reads back identically with the `gltf` crate, and the errors for
//! bad input.

mod common;

use dream3d::field::FieldConfig;
use dream3d::gpu::{GpuContext, GpuField};
use dream3d::mesh::export::{bake_texture, extract, ExportSettings};
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

/// The Khronos validator's issues for `file` (`tests/js`: `npm ci --prefix tests/js`).
fn validate(file: &Path) -> serde_json::Value {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/gltf-validator").is_dir(),
        "the glTF validator is not installed: npm ci --prefix tests/js (.ci/run does)"
    );
    let out = Command::new("node")
        .arg(js.join("validate.mjs"))
        .arg(file)
        .output()
        .expect("node (Node.js) on the PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
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
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let glb = dir.path().join(name);
        let issues = validate(&glb);
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
