//! Finding and loading model files: diffusers folders, the HF cache layout, weight-file
//! variants, and every bad input the loader must explain.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{copy_dir, max_abs_diff, parity, sd_tiny_dir};
use dream3d::stable_diffusion::{load_text_encoder, load_unet, load_vae, StableDiffusion};
use dream3d::weights::{Lookup, ModelFiles};
use dream3d::Error;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A writable copy of the sd_tiny model folder.
fn copy_model() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("model");
    copy_dir(&sd_tiny_dir(), &dst);
    (tmp, dst)
}

fn offline(cache: &Path) -> Lookup {
    Lookup {
        cache: cache.to_path_buf(),
        offline: true,
        ..Lookup::default()
    }
}

fn resolve(dir: &Path) -> ModelFiles {
    offline(dir).resolve(dir.to_str().unwrap()).unwrap()
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn rewrite_tensors(path: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, path).unwrap();
}

fn text_encoder_error(files: &ModelFiles) -> String {
    match load_text_encoder(files, DType::F32, &Device::Cpu) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hf_cache_snapshot_is_found_offline() {
    let cache = tempfile::tempdir().unwrap();
    let snapshot = common::hf_snapshot(cache.path(), "acme/tiny-sd", "0123abcd");
    copy_dir(&sd_tiny_dir(), &snapshot);
    let files = offline(cache.path()).resolve("acme/tiny-sd").unwrap();
    assert_eq!(files.root, snapshot);
    assert!(files.tokenizer_dir.is_some());
    // A commit hash works as the revision too.
    let by_hash = Lookup {
        revision: "0123abcd".into(),
        ..offline(cache.path())
    };
    assert_eq!(by_hash.resolve("acme/tiny-sd").unwrap().root, files.root);
}

#[test]
fn missing_model_names_every_path_searched_and_the_fetch_command() {
    let cache = tempfile::tempdir().unwrap();
    let err = offline(cache.path()).resolve("acme/absent").unwrap_err();
    assert!(matches!(err, Error::ModelNotFound { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains(
            &cache
                .path()
                .join("models--acme--absent")
                .display()
                .to_string()
        ),
        "{msg}"
    );
    assert!(msg.contains("dream3d info --model acme/absent"), "{msg}");
}

#[test]
fn cli_reports_a_missing_model_and_honours_hf_env() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dream3d"))
        .args(["info", "--model", "acme/absent"])
        .env_remove("HF_HUB_CACHE")
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            &home
                .path()
                .join("hub/models--acme--absent")
                .display()
                .to_string()
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn cli_info_describes_the_model() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dream3d"))
        .args(["info", "--model", sd_tiny_dir().to_str().unwrap()])
        .output()
        .unwrap();
    common::assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "2 layers, width 8, 2 heads",
        "channels [16, 32]",
        "heads [2, 4]",
        "Epsilon prediction",
        "resolution 32×32 px",
        "stored as F32",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
}

#[test]
fn wrong_shape_names_tensor_expected_and_found() {
    let (_tmp, dir) = copy_model();
    let path = dir.join("text_encoder/model.safetensors");
    rewrite_tensors(&path, |t| {
        t.insert(
            "text_model.final_layer_norm.weight".into(),
            Tensor::zeros(9, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let msg = text_encoder_error(&resolve(&dir));
    assert!(msg.contains("text_model.final_layer_norm.weight"), "{msg}");
    assert!(msg.contains("[9]") && msg.contains("[8]"), "{msg}");
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn missing_and_unexpected_tensors_are_named() {
    let (_tmp, dir) = copy_model();
    let path = dir.join("text_encoder/model.safetensors");
    rewrite_tensors(&path, |t| {
        t.remove("text_model.encoder.layers.1.mlp.fc2.bias");
    });
    let msg = text_encoder_error(&resolve(&dir));
    assert!(
        msg.contains("text_model.encoder.layers.1.mlp.fc2.bias") && msg.contains("missing"),
        "{msg}"
    );

    let (_tmp2, dir) = copy_model();
    let path = dir.join("text_encoder/model.safetensors");
    rewrite_tensors(&path, |t| {
        t.insert(
            "text_model.encoder.layers.2.extra".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let msg = text_encoder_error(&resolve(&dir));
    assert!(
        msg.contains("unexpected") && msg.contains("text_model.encoder.layers.2.extra"),
        "{msg}"
    );
}

#[test]
fn truncated_safetensors_is_reported_with_the_fix() {
    let (_tmp, dir) = copy_model();
    let path = dir.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_unet(&resolve(&dir), DType::F32, &Device::Cpu)
        .err()
        .expect("truncated file fails");
    let msg = err.to_string();
    assert!(matches!(err, Error::CorruptWeights { .. }), "{msg}");
    assert!(
        msg.contains("diffusion_pytorch_model.safetensors") && msg.contains("fetch it again"),
        "{msg}"
    );
}

#[test]
fn unsupported_config_values_are_named() {
    let cases: [(&str, &str, serde_json::Value, &str); 4] = [
        (
            "unet/config.json",
            "down_block_types",
            serde_json::json!(["SimpleCrossAttnDownBlock2D", "DownBlock2D"]),
            "SimpleCrossAttnDownBlock2D",
        ),
        (
            "unet/config.json",
            "class_embed_type",
            serde_json::json!("timestep"),
            "class_embed_type",
        ),
        (
            "text_encoder/config.json",
            "hidden_act",
            serde_json::json!("relu"),
            "relu",
        ),
        (
            "scheduler/scheduler_config.json",
            "prediction_type",
            serde_json::json!("sample"),
            "sample",
        ),
    ];
    for (file, field, value, needle) in cases {
        let (_tmp, dir) = copy_model();
        edit_json(&dir.join(file), |v| v[field] = value);
        let err = StableDiffusion::load(resolve(&dir), DType::F32, &Device::Cpu)
            .err()
            .expect("bad config fails");
        let msg = err.to_string();
        assert!(matches!(err, Error::UnsupportedConfig { .. }), "{msg}");
        assert!(
            msg.contains(file.rsplit('/').next().unwrap())
                && msg.contains(field)
                && msg.contains(needle),
            "{msg}"
        );
    }
}

#[test]
fn stray_position_ids_are_ignored() {
    let (_tmp, dir) = copy_model();
    let path = dir.join("text_encoder/model.safetensors");
    rewrite_tensors(&path, |t| {
        let ids = Tensor::arange(0i64, 77, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        t.insert("text_model.embeddings.position_ids".into(), ids);
    });
    load_text_encoder(&resolve(&dir), DType::F32, &Device::Cpu).unwrap();
}

#[test]
fn unprefixed_text_encoder_keys_load() {
    // transformers ≥ 5 saves CLIPTextModel without the `text_model.` prefix.
    let (_tmp, dir) = copy_model();
    let path = dir.join("text_encoder/model.safetensors");
    rewrite_tensors(&path, |t| {
        *t = t
            .drain()
            .map(|(k, v)| (k.trim_start_matches("text_model.").to_string(), v))
            .collect();
    });
    let (model, _) = load_text_encoder(&resolve(&dir), DType::F32, &Device::Cpu).unwrap();
    let p = parity();
    let err = max_abs_diff(
        &model.forward(&p["text.input_ids"]).unwrap(),
        &p["text.last_hidden_state"],
    );
    assert!(err <= 1e-4, "{err}");
}

#[test]
fn fp16_variant_files_load_and_upcast() {
    let (_tmp, dir) = copy_model();
    let full = dir.join("text_encoder/model.safetensors");
    let half = dir.join("text_encoder/model.fp16.safetensors");
    let tensors: HashMap<String, Tensor> = candle_core::safetensors::load(&full, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F16).unwrap()))
        .collect();
    candle_core::safetensors::save(&tensors, &half).unwrap();
    std::fs::remove_file(&full).unwrap();
    let files = resolve(&dir);
    assert_eq!(files.text_encoder.weights, half);
    let (model, weights) = load_text_encoder(&files, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(weights.stored_dtype(), DType::F16);
    let p = parity();
    let err = max_abs_diff(
        &model.forward(&p["text.input_ids"]).unwrap(),
        &p["text.last_hidden_state"],
    );
    assert!(err <= 2e-2, "fp16 weights drift {err}");
}

#[test]
fn fp16_files_are_preferred_only_when_asked() {
    let (_tmp, dir) = copy_model();
    let half = dir.join("unet/diffusion_pytorch_model.fp16.safetensors");
    std::fs::copy(dir.join("unet/diffusion_pytorch_model.safetensors"), &half).unwrap();
    assert_eq!(
        resolve(&dir).unet.weights,
        dir.join("unet/diffusion_pytorch_model.safetensors")
    );
    let fp16 = Lookup {
        prefer_fp16: true,
        ..offline(&dir)
    };
    assert_eq!(
        fp16.resolve(dir.to_str().unwrap()).unwrap().unet.weights,
        half
    );
}

#[test]
fn pytorch_pickle_weights_load() {
    let (_tmp, dir) = copy_model();
    std::fs::remove_file(dir.join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pickle_vae/diffusion_pytorch_model.bin");
    std::fs::copy(bin, dir.join("vae/diffusion_pytorch_model.bin")).unwrap();
    let (vae, _) = load_vae(&resolve(&dir), DType::F32, &Device::Cpu).unwrap();
    let p = parity();
    let err = max_abs_diff(
        &vae.decode(&p["vae.dec_input"]).unwrap(),
        &p["vae.dec_output"],
    );
    assert!(err <= 1e-4, "{err}");
}

#[test]
fn folder_without_weights_says_which_files_it_wanted() {
    let (_tmp, dir) = copy_model();
    std::fs::remove_file(dir.join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let err = offline(&dir)
        .resolve(dir.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("vae weights") && err.contains("diffusion_pytorch_model.safetensors"),
        "{err}"
    );
}
