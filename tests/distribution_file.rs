//! The prompt-distribution file: round trip, atomic write, and the errors for files that do not
//! fit the model or are damaged.

use candle_core::{DType, Device, Tensor};
use dream3d::diffusion::PredictionType;
use dream3d::models::ClipTextConfig;
use dream3d::prompt::{DistributionMeta, PositionMode, PromptDistribution};
use rand::SeedableRng;

const DEV: Device = Device::Cpu;

fn distribution() -> PromptDistribution {
    let d = 8;
    PromptDistribution {
        soft_prompts: Tensor::arange(0f32, (3 * 4 * d) as f32, &DEV)
            .unwrap()
            .reshape((3, 4, d))
            .unwrap(),
        mu: Tensor::ones((77, d), DType::F32, &DEV).unwrap(),
        sigma: Tensor::full(0.5f32, (77, d), &DEV).unwrap(),
        meta: DistributionMeta {
            format: "dream3d-prompt-distribution".into(),
            format_version: 1,
            base_model: "tests/fixtures/sd_tiny".into(),
            text_hidden_size: d,
            text_layers: 2,
            text_vocab: 49408,
            prediction_type: PredictionType::Epsilon,
            prompts: 3,
            tokens_per_prompt: 4,
            prefix: String::new(),
            suffix: "in the snow".into(),
            position_mode: PositionMode::Official,
            steps: 10,
            seed: 7,
            dream3d_version: env!("CARGO_PKG_VERSION").into(),
        },
    }
}

fn text_config() -> ClipTextConfig {
    ClipTextConfig::load(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sd_tiny/text_encoder/config.json"),
    )
    .unwrap()
}

#[test]
fn round_trip_keeps_tensors_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cats.dist.safetensors");
    let dist = distribution();
    dist.save(&path).unwrap();
    assert!(
        !path.with_extension("safetensors.tmp").exists(),
        "temporary file renamed away"
    );
    let back = PromptDistribution::load(&path, &DEV).unwrap();
    assert_eq!(back.meta, dist.meta);
    for (a, b) in [
        (&back.soft_prompts, &dist.soft_prompts),
        (&back.mu, &dist.mu),
        (&back.sigma, &dist.sigma),
    ] {
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
    back.check_compatible(&text_config(), &path).unwrap();
}

#[test]
fn sampling_scales_sigma_by_gamma() {
    let dist = distribution();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mean_only = dist.sample(0.0, &mut rng).unwrap();
    assert_eq!(
        mean_only.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![1.0; 77 * 8]
    );
    let a = dist
        .sample(2.0, &mut rand::rngs::StdRng::seed_from_u64(3))
        .unwrap();
    let b = dist
        .sample(1.0, &mut rand::rngs::StdRng::seed_from_u64(3))
        .unwrap();
    // Same ε: (a − μ) = 2 (b − μ).
    let lhs = (a - 1.0).unwrap();
    let rhs = ((b - 1.0).unwrap() * 2.0).unwrap();
    let diff = (lhs - rhs)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-6);
}

#[test]
fn a_different_text_encoder_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.safetensors");
    let mut config = text_config();
    config.hidden_size = 1024;
    config.num_hidden_layers = 23;
    let err = distribution()
        .check_compatible(&config, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("width 8") && err.contains("width 1024") && err.contains("fit again"),
        "{err}"
    );
}

#[test]
fn truncated_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.safetensors");
    distribution().save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = PromptDistribution::load(&path, &DEV)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("truncated or corrupt") && err.contains("d.safetensors"),
        "{err}"
    );

    let foreign = dir.path().join("weights.safetensors");
    let tensors = std::collections::HashMap::from([(
        "x".to_string(),
        Tensor::zeros(3, DType::F32, &DEV).unwrap(),
    )]);
    candle_core::safetensors::save(&tensors, &foreign).unwrap();
    let err = PromptDistribution::load(&foreign, &DEV)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a dream3d prompt distribution"), "{err}");
}

mod common;

#[test]
fn official_outputs_import() {
    use dream3d::prompt::import::{import_official, read_context, read_moments};
    use dream3d::prompt::Template;
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/official_dd");
    let sd =
        dream3d::stable_diffusion::StableDiffusion::load(common::sd_tiny_files(), DType::F32, &DEV)
            .unwrap();
    let ctx = read_context(&dir.join("prompt_learner.pt")).unwrap();
    assert_eq!(ctx.dims(), [3, 2, 8]);

    let with_npz = import_official(
        &dir.join("prompt_learner.pt"),
        Some(&dir.join("final.npz")),
        &sd,
        &Template::default(),
    )
    .unwrap();
    let (means, stds) = read_moments(&dir.join("final.npz")).unwrap();
    assert_eq!(
        with_npz.mu.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        means.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    assert_eq!(with_npz.sigma.dims(), stds.dims());
    assert_eq!(with_npz.meta.position_mode, PositionMode::Official);

    // Without final.npz the moments are computed: as the official PromptLearner.fit() does
    // (learner.safetensors, written with the official code by make_official_dd_learner.py).
    let computed = import_official(
        &dir.join("prompt_learner.pt"),
        None,
        &sd,
        &Template::default(),
    )
    .unwrap();
    let official = candle_core::safetensors::load(dir.join("learner.safetensors"), &DEV).unwrap();
    for (got, name) in [
        (&computed.mu, "import.mu"),
        (&computed.sigma, "import.sigma"),
    ] {
        let want = official[name].to_dtype(DType::F32).unwrap();
        let diff = common::max_abs_diff(got, &want);
        let scale = common::max_abs(&want);
        assert!(diff <= 1e-5 * scale, "{name}: {diff} (scale {scale})");
    }

    let err = read_context(&dir.join("final.npz"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("final.npz"), "{err}");
}

#[test]
fn cli_import_writes_a_loadable_distribution() {
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/official_dd");
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("imported.safetensors");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dream3d"))
        .arg("import")
        .arg(dir.join("prompt_learner.pt"))
        .arg("--npz")
        .arg(dir.join("final.npz"))
        .arg("--model")
        .arg(common::sd_tiny_dir())
        .arg("-o")
        .arg(&out_path)
        .output()
        .unwrap();
    common::assert_success(&out);
    let dist = PromptDistribution::load(&out_path, &DEV).unwrap();
    assert_eq!(dist.meta.prompts, 3);
}
