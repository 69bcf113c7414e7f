//! Parity with diffusers on the `sd_tiny` fixture: every single forward to ≤ 1e-4 max abs,
//! the 4-step DDIM sample with CFG 7.5 to ≤ 1e-4 relative.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{id_rows, max_abs, max_abs_diff, parity, sd_tiny_files};
use dream3d::diffusion::{sample_with_guidance, DdimSampler};
use dream3d::stable_diffusion::StableDiffusion;
use dream3d::tokenizer::ClipTokenizer;

const SINGLE_FORWARD_TOL: f32 = 1e-4;

fn model() -> StableDiffusion {
    StableDiffusion::load(sd_tiny_files(), DType::F32, &Device::Cpu).expect("sd_tiny loads")
}

fn extra_prompts() -> Vec<String> {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::sd_tiny_dir().join("parity_meta.json")).unwrap(),
    )
    .unwrap();
    meta["tokenizer_extra_prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

/// Both readings agree with open_clip on prompts without a literal "!" (for "!", see
/// [`each_family_reads_bang_as_its_reference_does`]).
#[test]
fn tokenizer_matches_open_clip() {
    let p = parity();
    let expected = id_rows(&p["tok.extra_ids_open_clip"]);
    let from_model = ClipTokenizer::from_dir(&common::sd_tiny_dir().join("tokenizer")).unwrap();
    let bundled = ClipTokenizer::bundled().unwrap();
    for tok in [&from_model, &bundled] {
        for (prompt, want) in extra_prompts().iter().zip(&expected) {
            if std::ptr::eq(tok, &from_model) && prompt.contains('!') {
                continue;
            }
            assert_eq!(&tok.encode(prompt).unwrap(), want, "prompt {prompt:?}");
        }
        let text_ids = id_rows(&p["text.input_ids"]);
        assert_eq!(
            tok.encode("a photograph of an astronaut riding a horse")
                .unwrap(),
            text_ids[0]
        );
        assert_eq!(tok.encode("").unwrap(), text_ids[1]);
    }
}

/// A literal "!": the SD family's reference (transformers' CLIPTokenizer on the model's
/// tokenizer/ folder, whose pad token is "!") reads it as the pad id 0; MVDream's (open_clip)
/// as the word "!</w>". `tests/fixtures/clip_tokenizer_bang.json`, written by
/// `make_tokenizer_bang.py` with both libraries.
#[test]
fn each_family_reads_bang_as_its_reference_does() {
    let path = common::sd_tiny_dir().join("../clip_tokenizer_bang.json");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids =
        |key: &str| -> Vec<Vec<u32>> { serde_json::from_value(fixture[key].clone()).unwrap() };
    let prompts: Vec<String> = serde_json::from_value(fixture["prompts"].clone()).unwrap();
    let sd = ClipTokenizer::from_dir(&common::sd_tiny_dir().join("tokenizer")).unwrap();
    let mvdream = ClipTokenizer::bundled().unwrap();
    for (tok, want, family) in [
        (&sd, ids("sd_transformers_ids"), "SD (transformers)"),
        (
            &mvdream,
            ids("mvdream_open_clip_ids"),
            "MVDream (open_clip)",
        ),
    ] {
        for (prompt, want) in prompts.iter().zip(&want) {
            assert_eq!(&tok.encode(prompt).unwrap(), want, "{family}: {prompt:?}");
        }
    }
}

#[test]
fn text_encoder_hidden_states() {
    let p = parity();
    let sd = model();
    let hidden = sd.text_encoder.forward(&p["text.input_ids"]).unwrap();
    let err = max_abs_diff(&hidden, &p["text.last_hidden_state"]);
    eprintln!("text encoder: max abs error {err:.2e}");
    assert!(
        err <= SINGLE_FORWARD_TOL,
        "text encoder max abs error {err}"
    );
}

#[test]
fn unet_noise_prediction_with_per_sample_timesteps() {
    let p = parity();
    let sd = model();
    let t: Vec<f64> = p["unet.timesteps"]
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&t| t as f64)
        .collect();
    assert_eq!(t, [751.0, 1.0]);
    let out = sd
        .unet
        .forward(&p["unet.latents"], &t, &p["unet.encoder_hidden_states"])
        .unwrap();
    let err = max_abs_diff(&out, &p["unet.noise_pred"]);
    eprintln!("unet: max abs error {err:.2e}");
    assert!(err <= SINGLE_FORWARD_TOL, "unet max abs error {err}");
}

#[test]
fn vae_encode_and_decode() {
    let p = parity();
    let sd = model();
    let dist = sd.vae.encode(&p["vae.image"]).unwrap();
    let err_mean = max_abs_diff(&dist.mean, &p["vae.enc_mean"]);
    let err_logvar = max_abs_diff(&dist.logvar, &p["vae.enc_logvar"]);
    let decoded = sd.vae.decode(&p["vae.dec_input"]).unwrap();
    let err_dec = max_abs_diff(&decoded, &p["vae.dec_output"]);
    eprintln!(
        "vae: mean {err_mean:.2e}, logvar {err_logvar:.2e}, decode {err_dec:.2e} max abs error"
    );
    assert!(err_mean <= SINGLE_FORWARD_TOL, "vae mean error {err_mean}");
    assert!(
        err_logvar <= SINGLE_FORWARD_TOL,
        "vae logvar error {err_logvar}"
    );
    assert!(err_dec <= SINGLE_FORWARD_TOL, "vae decode error {err_dec}");
}

#[test]
fn schedule_matches_diffusers() {
    let p = parity();
    let sd = model();
    let want = p["ddim.alphas_cumprod"].to_vec1::<f32>().unwrap();
    for (a, b) in sd.schedule.alphas_cumprod.iter().zip(&want) {
        assert_eq!(*a as f32, *b, "alphas_cumprod");
    }
    let steps: Vec<usize> = p["ddim.timesteps"]
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&t| t as usize)
        .collect();
    assert_eq!(sd.schedule.timesteps(4), steps);
}

#[test]
fn ddim_sample_with_guidance() {
    let p = parity();
    let sd = model();
    let tok = &sd.tokenizer;
    let ids = Tensor::new(
        vec![
            tok.encode("").unwrap(),
            tok.encode("a photograph of an astronaut riding a horse")
                .unwrap(),
        ],
        &Device::Cpu,
    )
    .unwrap();
    let embeds = sd.text_encoder.forward(&ids).unwrap();
    let err = max_abs_diff(&embeds, &p["ddim.prompt_embeds"]);
    assert!(err <= SINGLE_FORWARD_TOL, "prompt embeds error {err}");

    let sampler = DdimSampler::new(sd.schedule.clone(), 4);
    let mut steps = vec![];
    let latents = sample_with_guidance(
        &sd.unet,
        &sampler,
        &p["ddim.x_T"],
        &embeds.narrow(0, 0, 1).unwrap(),
        &embeds.narrow(0, 1, 1).unwrap(),
        7.5,
        |_, x| steps.push(x.clone()),
    )
    .unwrap();
    for (i, x) in steps.iter().enumerate() {
        let want = &p[&format!("ddim.step{i}.latents_out")];
        let rel = max_abs_diff(x, want) / max_abs(want);
        assert!(rel <= 1e-4, "step {i}: relative error {rel}");
    }
    let want = &p["ddim.final_latents"];
    let rel = max_abs_diff(&latents, want) / max_abs(want);
    eprintln!("ddim: final latents relative error {rel:.2e}");
    assert!(rel <= 1e-4, "final latents relative error {rel}");

    let scale = sd.vae.config.scaling_factor;
    let decoded = sd.vae.decode(&(latents / scale).unwrap()).unwrap();
    let image = ((decoded / 2.0).unwrap() + 0.5)
        .unwrap()
        .clamp(0f32, 1f32)
        .unwrap();
    let err = max_abs_diff(&image, &p["ddim.image"]);
    eprintln!("ddim: image max abs error {err:.2e}");
    assert!(err <= 1.0 / 255.0, "image error {err}");
}
