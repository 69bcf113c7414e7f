//! CLIP's image and text towers against transformers on tiny random towers it made
//! (`tests/fixtures/eval/make_clip_tiny.py`, `make_clip_text_tiny.py`), forwards within 1e-4;
//! preprocessing's shape and normalisation; configs the towers cannot run are refused.

mod common;

use candle_core::Device;
use dream3d::eval::clip::{ClipImageEncoder, ClipTextEncoder};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/clip_tiny")
}

/// The embeddings within 1e-4 of the reference's, which must not be degenerate.
fn assert_parity(got: &candle_core::Tensor, want: &candle_core::Tensor) {
    assert!(
        common::max_abs(want) > 0.1,
        "the fixture's embeddings are degenerate"
    );
    let diff = common::max_abs_diff(got, want);
    assert!(diff <= 1e-4, "max |candle − transformers| = {diff}");
}

#[test]
fn image_embeddings_match_transformers() {
    let encoder = ClipImageEncoder::load(&fixture(), &Device::Cpu).unwrap();
    let parity =
        candle_core::safetensors::load(fixture().join("parity.safetensors"), &Device::Cpu).unwrap();
    let got = encoder.embed(&parity["pixel_values"]).unwrap();
    assert_parity(&got, &parity["image_embeds"]);
}

#[test]
fn preprocessing_crops_the_centre_square_and_normalises() {
    let encoder = ClipImageEncoder::load(&fixture(), &Device::Cpu).unwrap();
    // A wide image, white over its centre square (and a margin for the bicubic kernel), black
    // at the far sides, which the crop drops.
    let image = image::RgbImage::from_fn(96, 64, |x, _| {
        if (8..88).contains(&x) {
            image::Rgb([255, 255, 255])
        } else {
            image::Rgb([0, 0, 0])
        }
    });
    let pixels = encoder.preprocess(&[image], &Device::Cpu).unwrap();
    assert_eq!(pixels.dims(), &[1, 3, 32, 32]);
    // White, normalised: (1 − mean) / std per channel, everywhere in the crop.
    let red: Vec<f32> = pixels
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let white = (1.0 - 0.481_454_66) / 0.268_629_54;
    assert!(
        red.iter().all(|v| (v - white).abs() < 1e-4),
        "{:?}",
        &red[..4]
    );
    assert_eq!(encoder.embed(&pixels).unwrap().dims(), &[1, 16]);
}

#[test]
fn towers_it_cannot_run_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(fixture().join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        config.replace("\"quick_gelu\"", "\"gelu\""),
    )
    .unwrap();
    std::fs::copy(
        fixture().join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let e = ClipImageEncoder::load(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("quick_gelu") && e.contains("config.json"), "{e}");
    let e = ClipImageEncoder::load(Path::new("/nonexistent"), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent/config.json"), "{e}");
}

#[test]
fn text_embeddings_match_transformers() {
    let dir = fixture().with_file_name("clip_text_tiny");
    let encoder = ClipTextEncoder::load(&dir, &Device::Cpu).unwrap();
    let parity =
        candle_core::safetensors::load(dir.join("parity.safetensors"), &Device::Cpu).unwrap();
    let got = encoder.embed(&parity["input_ids"]).unwrap();
    assert_parity(&got, &parity["text_embeds"]);
}
