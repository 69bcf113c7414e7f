//! `dream3d sample` with the tiny model: outputs, reproducibility, γ, composition, edits,
//! `--init-noise` parity with diffusers, and the errors for bad input.

mod common;

use candle_core::{Device, IndexOp, Tensor};
use dream3d::prompt::learner::{encode, gaussian};
use dream3d::prompt::{Edit, Frame, PromptDistribution, Template};
use dream3d::stable_diffusion::StableDiffusion;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// A folder holding `dream3d-runs/latest.dist.safetensors`, fitted once on the tiny model by
/// the user's own command (`dream3d fit REFS`), shared by the tests of this file.
fn fitted() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let refs = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/refs/spheres");
        let out = run_in(
            dir.path(),
            &[
                "fit",
                refs.to_str().unwrap(),
                "--steps",
                "2",
                "--prompts",
                "3",
                "--tokens",
                "2",
                "--samples",
                "1",
                "--batch",
                "2",
                "--resolution",
                "32",
                "--crops-per-image",
                "1",
            ],
        );
        common::assert_success(&out);
        dir
    })
    .path()
}

fn latest() -> PathBuf {
    fitted().join("dream3d-runs/latest.dist.safetensors")
}

/// Runs dream3d in `cwd` with `--model` pointing at the tiny model.
fn run_in(cwd: &Path, args: &[&str]) -> Output {
    common::dream3d(cwd)
        .args(args)
        .args(["--model", common::sd_tiny_dir().to_str().unwrap()])
        .output()
        .unwrap()
}

/// Runs `dream3d sample` in a fresh folder beside the fitted distribution.
fn sample(args: &[&str]) -> (tempfile::TempDir, Output) {
    let cwd = tempfile::tempdir_in(fitted()).unwrap();
    let runs = fitted().join("dream3d-runs");
    std::os::unix::fs::symlink(&runs, cwd.path().join("dream3d-runs")).unwrap();
    let mut all = vec!["sample", "--steps", "2"];
    all.extend_from_slice(args);
    let out = run_in(cwd.path(), &all);
    (cwd, out)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn model() -> StableDiffusion {
    StableDiffusion::load(
        common::sd_tiny_files(),
        candle_core::DType::F32,
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn the_latest_distribution_gives_numbered_pngs_a_grid_and_a_sidecar() {
    let (dir, out) = sample(&["-n", "3", "--batch", "2", "--seed", "5", "-o", "a"]);
    common::assert_success(&out);
    let err = stderr(&out);
    assert!(
        err.contains("prompt distribution: dream3d-runs/latest.dist.safetensors"),
        "{err}"
    );
    let a = dir.path().join("a");
    for i in 0..3 {
        let img = image::open(a.join(format!("{i:04}.png"))).unwrap();
        assert_eq!((img.width(), img.height()), (32, 32));
    }
    assert!(!a.join("0003.png").exists());
    let grid = image::open(a.join("grid.png")).unwrap();
    assert!(grid.width() > 64 && grid.height() > 64, "2 × 2 sheet");
    let sidecar: serde_json::Value =
        serde_json::from_slice(&read(&a.join("samples.json"))).unwrap();
    let seeds: Vec<u64> = sidecar["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, [5, 6, 7]);
    assert_eq!(sidecar["steps"], 2);
    assert_ne!(read(&a.join("0000.png")), read(&a.join("0001.png")));
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_any_image_regenerates_alone() {
    let (dir, out) = sample(&[
        "-n", "2", "--batch", "2", "--seed", "11", "-o", "a", "--fp16",
    ]);
    common::assert_success(&out);
    let again = run_in(
        dir.path(),
        &[
            "sample", "--steps", "2", "-n", "2", "--seed", "11", "-o", "b", "--fp16",
        ],
    );
    common::assert_success(&again);
    for f in ["0000.png", "0001.png"] {
        assert_eq!(
            read(&dir.path().join("a").join(f)),
            read(&dir.path().join("b").join(f))
        );
    }
    // Image 1 was made in a batch with image 0; the sidecar's command makes it alone, from
    // any folder (its paths are absolute) and with the same weight files (`--fp16` kept).
    let sidecar: serde_json::Value =
        serde_json::from_slice(&read(&dir.path().join("a/samples.json"))).unwrap();
    let command = sidecar["images"][1]["command"].as_str().unwrap();
    assert!(command.contains(" --fp16"), "{command}");
    let rest = command.strip_prefix("dream3d ").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let regen = Command::new("sh")
        .current_dir(elsewhere.path())
        .arg("-c")
        .arg(format!("'{}' {rest} -o c", env!("CARGO_BIN_EXE_dream3d")))
        .output()
        .unwrap();
    common::assert_success(&regen);
    assert_eq!(
        read(&dir.path().join("a/0001.png")),
        read(&elsewhere.path().join("c/0000.png"))
    );
}

fn write_safetensors(path: &Path, tensors: &[(&str, &Tensor)]) {
    let map: std::collections::HashMap<String, Tensor> = tensors
        .iter()
        .map(|(n, t)| (n.to_string(), (*t).clone()))
        .collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

/// 1 × 4 × 16 × 16 initial latents (32 px with the tiny VAE), shared by every image.
fn shared_noise(dir: &Path) -> String {
    let path = dir.join("noise.safetensors");
    let x = common::uniform(&[1, 4, 16, 16], 3, candle_core::DType::F32);
    write_safetensors(&path, &[("latents", &x)]);
    path.to_str().unwrap().to_string()
}

#[test]
fn gamma_zero_makes_every_conditioning_the_mean() {
    // Same initial latents for all images: with γ = 0 only the conditioning could differ.
    let noise = shared_noise(fitted());
    let (dir, out) = sample(&[
        "-n",
        "2",
        "--gamma",
        "0",
        "--init-noise",
        &noise,
        "-o",
        "g0",
    ]);
    common::assert_success(&out);
    let g0 = dir.path().join("g0");
    assert_eq!(read(&g0.join("0000.png")), read(&g0.join("0001.png")));
    let out = run_in(
        dir.path(),
        &[
            "sample",
            "--steps",
            "2",
            "-n",
            "2",
            "--init-noise",
            &noise,
            "-o",
            "g1",
        ],
    );
    common::assert_success(&out);
    let g1 = dir.path().join("g1");
    assert_ne!(read(&g1.join("0000.png")), read(&g1.join("0001.png")));
}

#[test]
fn composition_of_two_distributions_samples() {
    let latest = latest();
    let half = format!("{}:0.5", latest.display());
    let wide = format!("{}:0.5:2", latest.display());
    let (dir, out) = sample(&["--mix", &half, "--mix", &wide, "-n", "1", "-o", "mix"]);
    common::assert_success(&out);
    let sidecar: serde_json::Value =
        serde_json::from_slice(&read(&dir.path().join("mix/samples.json"))).unwrap();
    let gammas: Vec<f64> = sidecar["distributions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["gamma"].as_f64().unwrap())
        .collect();
    assert_eq!(gammas, [1.0, 2.0]);
    assert!(dir.path().join("mix/0000.png").is_file());
}

/// μ and unbiased σ over K of the soft prompts encoded with `template`, by hand.
fn refit_by_hand(
    sd: &StableDiffusion,
    d: &PromptDistribution,
    template: &Template,
) -> (Tensor, Tensor) {
    let frame = Frame::new(
        &sd.text_encoder,
        &sd.tokenizer,
        template,
        d.meta.tokens_per_prompt,
        d.meta.position_mode,
    )
    .unwrap();
    let hidden = encode(&sd.text_encoder, &frame, &d.soft_prompts)
        .unwrap()
        .hidden;
    assert_eq!(hidden.dim(0).unwrap(), d.meta.prompts);
    let mu = hidden.mean(0).unwrap();
    let var = (hidden
        .broadcast_sub(&mu)
        .unwrap()
        .sqr()
        .unwrap()
        .sum(0)
        .unwrap()
        / (d.meta.prompts - 1) as f64)
        .unwrap();
    (mu, var.sqrt().unwrap())
}

#[test]
fn an_edit_re_encodes_the_k_prompts_and_refits_the_gaussian() {
    let sd = model();
    let d = PromptDistribution::load(&latest(), &Device::Cpu).unwrap();
    let edit = Edit::parse("a photo of * made of gold").unwrap();
    let edited = d.edited(&edit, &sd.text_encoder, &sd.tokenizer).unwrap();
    assert!(
        common::max_abs_diff(&edited.mu, &d.mu) > 1e-3,
        "the edit changes μ"
    );
    let (mu, sigma) = refit_by_hand(&sd, &d, &edit.template(&d.meta.template()));
    assert!(common::max_abs_diff(&edited.mu, &mu) < 1e-6);
    assert!(common::max_abs_diff(&edited.sigma, &sigma) < 1e-6);
    // The learned tokens really sit among the words: the fitted template (no words) gives back
    // the distribution's own μ, σ.
    let plain = Edit::Placed(d.meta.template());
    let same = d.edited(&plain, &sd.text_encoder, &sd.tokenizer).unwrap();
    assert!(common::max_abs_diff(&same.mu, &d.mu) < 1e-5);
    assert!(common::max_abs_diff(&same.sigma, &d.sigma) < 1e-5);
    // And `gaussian` is the function fit uses.
    let frame = Frame::new(
        &sd.text_encoder,
        &sd.tokenizer,
        &d.meta.template(),
        2,
        d.meta.position_mode,
    )
    .unwrap();
    let (fit_mu, _) = gaussian(
        &encode(&sd.text_encoder, &frame, &d.soft_prompts)
            .unwrap()
            .hidden,
    )
    .unwrap();
    assert!(common::max_abs_diff(&fit_mu, &d.mu) < 1e-5);
}

#[test]
fn edits_run_from_the_command_line() {
    let (dir, out) = sample(&["--edit", "pink *", "-n", "1", "--seed", "1", "-o", "pink"]);
    common::assert_success(&out);
    assert!(stderr(&out).contains("\"pink *\""), "{}", stderr(&out));
    let (plain_dir, plain) = sample(&["-n", "1", "--seed", "1", "-o", "plain"]);
    common::assert_success(&plain);
    assert_ne!(
        read(&dir.path().join("pink/0000.png")),
        read(&plain_dir.path().join("plain/0000.png")),
        "the edit changes the image made from the same seed"
    );
}

#[test]
fn init_noise_reproduces_the_diffusers_pipeline() {
    let parity = common::sd_tiny_dir().join("parity.safetensors");
    let noise = format!("{}:ddim.x_T", parity.display());
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(
        dir.path(),
        &[
            "sample",
            "--prompt",
            "a photograph of an astronaut riding a horse",
            "--steps",
            "4",
            "--guidance",
            "7.5",
            "--init-noise",
            &noise,
            "-n",
            "1",
            "-o",
            "ddim",
        ],
    );
    common::assert_success(&out);
    let png = image::open(dir.path().join("ddim/0000.png"))
        .unwrap()
        .to_rgb8();
    let want = common::parity()["ddim.image"].i(0).unwrap(); // 3 × H × W in [0, 1]
    let got = Tensor::from_vec(
        png.as_raw()
            .iter()
            .map(|&v| v as f32 / 255.0)
            .collect::<Vec<_>>(),
        (32, 32, 3),
        &Device::Cpu,
    )
    .unwrap()
    .permute((2, 0, 1))
    .unwrap();
    let err = common::max_abs_diff(&got, &want);
    eprintln!("--init-noise DDIM image vs diffusers: max abs error {err:.2e}");
    assert!(err <= 1.0 / 255.0 + 1e-6, "image error {err}");
}

fn fails_with(args: &[&str], needle: &str) {
    let (_, out) = sample(args);
    assert!(!out.status.success(), "{args:?} should fail");
    let err = stderr(&out);
    assert!(
        err.contains(needle),
        "{args:?}: expected `{needle}` in:\n{err}"
    );
}

#[test]
fn bad_input_is_explained() {
    let latest = latest();
    let a = format!("{}:0.7", latest.display());
    let b = format!("{}:0.2", latest.display());
    fails_with(&["--mix", &a, "--mix", &b], "sum to 0.8999");

    // A distribution fitted on a text encoder of another depth.
    let mut other = PromptDistribution::load(&latest, &Device::Cpu).unwrap();
    other.meta.text_layers += 1;
    other.meta.base_model = "another/model".into();
    let other_path = fitted().join("other.dist.safetensors");
    other.save(&other_path).unwrap();
    let b = format!("{}:0.3", other_path.display());
    fails_with(
        &["--mix", &a, "--mix", &b],
        "must share the base text encoder",
    );

    fails_with(&["--edit", "* and *"], "2 `*` markers");
    fails_with(&["--gamma=-1"], "must be a finite number ≥ 0");
    let nan_gamma = format!("{}:1:NaN", latest.display());
    fails_with(&["--mix", &nan_gamma], "must be a finite number ≥ 0");

    let blocker = fitted().join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let inside = blocker.join("out");
    fails_with(
        &["-o", inside.to_str().unwrap()],
        "cannot write to the output folder",
    );

    let noise = fitted().join("wrong.safetensors");
    write_safetensors(
        &noise,
        &[(
            "latents",
            &Tensor::zeros((2, 4, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap(),
        )],
    );
    fails_with(
        &["-n", "3", "--init-noise", noise.to_str().unwrap()],
        "need [3, 4, 16, 16]",
    );

    // Existing samples are kept unless --force.
    let (dir, out) = sample(&["-n", "1", "-o", "once"]);
    common::assert_success(&out);
    let again = run_in(
        dir.path(),
        &["sample", "-n", "1", "--steps", "1", "-o", "once"],
    );
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
}
