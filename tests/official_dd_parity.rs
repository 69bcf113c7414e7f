//! `fit`'s objective against the official DreamDistribution code on the tiny SD model: for fixed
//! soft prompts and noise, μ and σ (the official `PromptLearner.fit()`), the sampled
//! conditionings and the orthogonality loss (`PromptLearner.forward()`), the Min-SNR diffusion
//! loss and the total, in both position modes. Expected values:
//! `tests/fixtures/official_dd/learner.safetensors`, written by
//! `tests/fixtures/make_official_dd_learner.py` with the official `prompt_learner.py`.

mod common;

use candle_core::{DType, Device, Tensor};
use dream3d::fit::{batch_loss, Batch, BatchLoss, FitConfig};
use dream3d::prompt::learner::{encode, gaussian, reparameterize};
use dream3d::prompt::{Frame, PositionMode, Template};
use dream3d::stable_diffusion::StableDiffusion;
use std::collections::HashMap;

/// Soft tokens per prompt in the fixture.
const L: usize = 2;

fn fixture() -> HashMap<String, Tensor> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/official_dd/learner.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).expect("learner.safetensors loads")
}

/// Largest difference relative to the expected tensor's largest magnitude.
fn relative_error(got: &Tensor, want: &Tensor) -> f64 {
    let f64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let (got, want) = (f64(got), f64(want));
    let scale = want
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let diff = (got - &want)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    diff / scale.max(f64::MIN_POSITIVE)
}

fn assert_close(got: &Tensor, want: &Tensor, tolerance: f64, what: &str) {
    let err = relative_error(got, want);
    eprintln!("{what}: relative error {err:.1e}");
    assert!(
        err < tolerance,
        "{what}: relative error {err:.2e} (tolerance {tolerance:.0e})"
    );
}

#[test]
fn fit_objective_matches_the_official_prompt_learner() {
    let sd = StableDiffusion::load(common::sd_tiny_files(), DType::F32, &Device::Cpu).unwrap();
    let f = fixture();
    let x0 = &f["latents"];
    let noise = &f["noise"];
    let timesteps: Vec<usize> = f["timesteps"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|t| t as usize)
        .collect();
    let config = FitConfig::default();
    // train.py's defaults, which the fixture used.
    assert_eq!(
        (config.min_snr_gamma, config.orthogonality_weight),
        (5.0, 1e-3)
    );
    let templates = [
        ("plain", Template::default()),
        (
            "words",
            Template {
                prefix: "a photo of".into(),
                suffix: "in the snow".into(),
            },
        ),
    ];
    for (case, template) in templates {
        let ctx = &f[&format!("{case}.ctx")];
        let eps = &f[&format!("{case}.eps")];
        let (b, m, tokens, d) = eps.dims4().unwrap();
        let eps = eps.reshape((b * m, tokens, d)).unwrap();
        for (mode, position) in [
            ("official", PositionMode::Official),
            ("once", PositionMode::Once),
        ] {
            let key = format!("{case}.{mode}");
            let frame =
                Frame::new(&sd.text_encoder, &sd.tokenizer, &template, L, position).unwrap();
            let enc = encode(&sd.text_encoder, &frame, ctx).unwrap();
            let (mu, sigma) = gaussian(&enc.hidden).unwrap();
            assert_close(&mu, &f[&format!("{key}.mu")], 1e-5, &format!("{key}: μ"));
            assert_close(
                &sigma,
                &f[&format!("{key}.sigma")],
                1e-5,
                &format!("{key}: σ"),
            );
            let samples = reparameterize(&mu, &sigma, &eps).unwrap();
            let want = f[&format!("{key}.samples")]
                .reshape((b * m, tokens, d))
                .unwrap();
            assert_close(&samples, &want, 1e-5, &format!("{key}: samples"));

            let batch = Batch {
                x0,
                noise,
                timesteps: &timesteps,
                eps: &eps,
            };
            let BatchLoss {
                loss,
                diffusion,
                orthogonality,
            } = batch_loss(&sd, &frame, ctx, &batch, &config).unwrap();
            for (got, name) in [
                (orthogonality, "orthogonality"),
                (diffusion, "diffusion"),
                (loss, "loss"),
            ] {
                assert_close(
                    &got.reshape(1).unwrap(),
                    &f[&format!("{key}.{name}")],
                    1e-5,
                    &format!("{key}: {name}"),
                );
            }
        }
    }
}
