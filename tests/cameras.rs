//! Cameras against MVDream's own `get_camera` (tests/fixtures/mvdream_tiny/cameras.*, made with
//! the official code): its float64 values, and the float32 tensor the UNet is given.

mod common;

use candle_core::Device;
use dream3d::camera::{mvdream_camera_tensor, mvdream_cameras};

#[test]
fn mvdream_cameras_match_the_official_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mvdream_tiny");
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cameras.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("cameras.safetensors"), &Device::Cpu).unwrap();
    let settings = settings.as_object().unwrap();
    assert_eq!(settings.len(), 9);
    for (name, s) in settings {
        let ours = mvdream_cameras(
            s["num_frames"].as_u64().unwrap() as usize,
            s["elevation"].as_f64().unwrap(),
            s["azimuth_start"].as_f64().unwrap(),
            s["azimuth_span"].as_f64().unwrap(),
            s["blender_coord"].as_bool().unwrap(),
        );
        let want = tensors[&format!("camera64.{name}")]
            .to_vec2::<f64>()
            .unwrap();
        assert_eq!(ours.len(), want.len(), "{name}: frames");
        for (a, b) in ours.iter().zip(&want) {
            let err = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                err < 1e-6,
                "{name}: max abs error {err}\nours {a:?}\nwant {b:?}"
            );
        }

        let ours32 = mvdream_camera_tensor(&ours, &Device::Cpu).unwrap();
        let want32 = &tensors[&format!("camera.{name}")];
        assert_eq!(want32.dtype(), candle_core::DType::F32, "{name}");
        let err = common::max_abs_diff(&ours32, want32);
        assert!(err < 1e-6, "{name} (float32): max abs error {err}");
    }
}
