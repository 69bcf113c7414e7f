//! `fit` end to end on the tiny fixture model and a synthetic reference set of coloured shapes:
//! run directory contents, exact resume, Ctrl-C, NaN handling and the bad inputs.

mod common;

use candle_core::{DType, Device, Tensor};
use common::sd_tiny_files;
use dream3d::fit::checkpoint::Checkpoint;
use dream3d::fit::{fit, FitConfig, FitEvent, FitOutcome, RunConfig, RunDir};
use dream3d::prompt::PromptDistribution;
use dream3d::stable_diffusion::StableDiffusion;
use image::{Rgb, RgbImage, Rgba, RgbaImage};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Four 40×48 images of discs in different colours, one with transparency, one grey.
fn shapes(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let colours = [[220, 40, 40], [40, 160, 60], [40, 60, 200], [200, 180, 30]];
    for (i, c) in colours.iter().enumerate() {
        let disc = |x: u32, y: u32| {
            let (dx, dy) = (x as f32 - 20.0 - i as f32 * 2.0, y as f32 - 24.0);
            dx * dx + dy * dy < 150.0
        };
        let path = dir.join(format!("shape{i}.png"));
        match i {
            1 => RgbaImage::from_fn(40, 48, |x, y| {
                if disc(x, y) {
                    Rgba([c[0], c[1], c[2], 255])
                } else {
                    Rgba([0, 0, 0, 0])
                }
            })
            .save(&path)
            .unwrap(),
            2 => image::GrayImage::from_fn(40, 48, |x, y| {
                image::Luma([if disc(x, y) { 60 } else { 250 }])
            })
            .save(&path)
            .unwrap(),
            _ => RgbImage::from_fn(40, 48, |x, y| {
                if disc(x, y) {
                    Rgb(*c)
                } else {
                    Rgb([255, 255, 255])
                }
            })
            .save(&path)
            .unwrap(),
        }
    }
}

fn tiny_config(refs: &Path) -> FitConfig {
    FitConfig {
        refs: refs.to_path_buf(),
        model: common::sd_tiny_dir().display().to_string(),
        prompts: 3,
        tokens: 2,
        samples: 2,
        batch: 2,
        steps: 6,
        resolution: Some(32),
        crops_per_image: 2,
        checkpoint_every: 3,
        seed: 42,
        ..FitConfig::default()
    }
}

fn model() -> StableDiffusion {
    StableDiffusion::load(sd_tiny_files(), DType::F32, &Device::Cpu).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    refs: PathBuf,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let refs = tmp.path().join("shapes");
    shapes(&refs);
    let root = tmp.path().to_path_buf();
    Fixture {
        _tmp: tmp,
        refs,
        root,
    }
}

#[test]
fn fit_writes_the_run_directory_and_a_usable_distribution() {
    let f = fixture();
    let sd = model();
    let config = tiny_config(&f.refs);
    let run = RunDir::create(&f.root.join("run"), &config).unwrap();
    let mut steps = 0;
    let outcome = fit(&config, &sd, &run, &AtomicBool::new(false), |e| {
        steps += matches!(e, FitEvent::Step(_)) as usize
    })
    .unwrap();
    let FitOutcome::Finished(dist) = outcome else {
        panic!("not finished")
    };
    assert_eq!(steps, 6);
    assert_eq!(dist.mu.dims(), [77, 8]);
    assert_eq!(dist.soft_prompts.dims(), [3, 2, 8]);
    let back =
        PromptDistribution::load(&run.path(dream3d::fit::DISTRIBUTION_FILE), &Device::Cpu).unwrap();
    assert_eq!(bits(&back.mu), bits(&dist.mu));
    let metrics = std::fs::read_to_string(run.metrics_path()).unwrap();
    assert_eq!(metrics.lines().count(), 6);
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    for key in [
        "step",
        "loss",
        "diffusion",
        "orthogonality",
        "lr",
        "grad_norm",
        "it_per_s",
    ] {
        assert!(first.get(key).is_some(), "metrics lack {key}");
    }
    assert_eq!(
        FitConfig::from_toml_file(&run.config_path()).unwrap(),
        config
    );
    assert!(run.path(dream3d::fit::LATENTS_FILE).is_file());
}

#[test]
fn interrupted_and_resumed_fit_equals_an_uninterrupted_one() {
    let f = fixture();
    let sd = model();
    let config = tiny_config(&f.refs);
    let whole = RunDir::create(&f.root.join("whole"), &config).unwrap();
    let FitOutcome::Finished(a) =
        fit(&config, &sd, &whole, &AtomicBool::new(false), |_| {}).unwrap()
    else {
        panic!()
    };

    let parts = RunDir::create(&f.root.join("parts"), &config).unwrap();
    let stop = AtomicBool::new(false);
    let outcome = fit(&config, &sd, &parts, &stop, |e| {
        if let FitEvent::Step(m) = e {
            if m.step == 3 {
                stop.store(true, Ordering::SeqCst);
            }
        }
    })
    .unwrap();
    assert!(
        matches!(outcome, FitOutcome::Interrupted { next_step: 4 }),
        "{outcome:?}"
    );
    let (parts, config) = RunDir::open(&parts.root).unwrap();
    let FitOutcome::Finished(b) =
        fit(&config, &sd, &parts, &AtomicBool::new(false), |_| {}).unwrap()
    else {
        panic!()
    };
    assert_eq!(bits(&a.soft_prompts), bits(&b.soft_prompts));
    assert_eq!(bits(&a.sigma), bits(&b.sigma));
    assert_eq!(
        std::fs::read_to_string(parts.metrics_path())
            .unwrap()
            .lines()
            .count(),
        6
    );
}

#[test]
fn divergence_stops_with_the_last_finite_state() {
    let f = fixture();
    let sd = model();
    let config = FitConfig {
        lr: 1e30,
        steps: 20,
        ..tiny_config(&f.refs)
    };
    let run = RunDir::create(&f.root.join("run"), &config).unwrap();
    let err = fit(&config, &sd, &run, &AtomicBool::new(false), |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("diverged") && err.contains("--resume"),
        "{err}"
    );
    let checkpoint = Checkpoint::load(&run.checkpoint_path(), &Device::Cpu).unwrap();
    let values = checkpoint
        .soft_prompts
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(
        values.iter().all(|v| v.is_finite()),
        "the kept state is finite"
    );
    assert!(checkpoint.next_step < 20);
}

#[test]
fn bad_reference_folders_are_explained() {
    let f = fixture();
    let sd = model();
    let run_with = |refs: &Path, tag: &str| {
        let config = tiny_config(refs);
        let run = RunDir::create(&f.root.join(tag), &config).unwrap();
        fit(&config, &sd, &run, &AtomicBool::new(false), |_| {})
            .unwrap_err()
            .to_string()
    };
    let missing = run_with(&f.root.join("nope"), "a");
    assert!(missing.contains("does not exist"), "{missing}");
    let empty = f.root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "no images").unwrap();
    assert!(run_with(&empty, "b").contains("no png, jpeg or webp"));
    let single = f.root.join("single");
    std::fs::create_dir_all(&single).unwrap();
    std::fs::copy(f.refs.join("shape0.png"), single.join("a.png")).unwrap();
    assert!(run_with(&single, "c").contains("single image"));
    let corrupt = f.root.join("corrupt");
    shapes(&corrupt);
    std::fs::write(corrupt.join("broken.jpg"), b"not a jpeg").unwrap();
    let msg = run_with(&corrupt, "d");
    assert!(
        msg.contains("broken.jpg") && msg.contains("cannot read"),
        "{msg}"
    );
    let config = FitConfig {
        prompts: 1,
        ..tiny_config(&f.refs)
    };
    let msg = config.validate().unwrap_err().to_string();
    assert!(
        msg.contains("--prompts") && msg.contains("at least 2"),
        "{msg}"
    );
}

fn cli(cwd: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = common::dream3d(cwd);
    cmd.args(args);
    cmd
}

#[test]
fn cli_fit_writes_the_default_distribution_and_resumes() {
    let f = fixture();
    let model = common::sd_tiny_dir().display().to_string();
    let refs = f.refs.display().to_string();
    let args = [
        "fit",
        &refs,
        "--model",
        &model,
        "--steps",
        "2",
        "--prompts",
        "3",
        "--tokens",
        "2",
        "--samples",
        "2",
        "--resolution",
        "32",
        "--crops-per-image",
        "1",
    ];
    let out = cli(&f.root, &args).output().unwrap();
    common::assert_success(&out);
    let latest = f.root.join("dream3d-runs/latest.dist.safetensors");
    PromptDistribution::load(&latest, &Device::Cpu).unwrap();
    assert!(f
        .root
        .join("dream3d-runs/fit-shapes/metrics.jsonl")
        .is_file());
    // Extending the run continues from its checkpoint.
    let out = cli(
        &f.root,
        &[
            "fit",
            "--resume",
            "dream3d-runs/fit-shapes",
            "--steps",
            "3",
            "-o",
            "more.safetensors",
        ],
    )
    .output()
    .unwrap();
    common::assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("starting at step 2"), "{stderr}");
    let more = f.root.join("more.safetensors");
    assert!(more.is_file());
    // A later resume without -o writes where the run was last told to, not to `latest`.
    std::fs::remove_file(&more).unwrap();
    let latest_before = std::fs::read(&latest).unwrap();
    let out = cli(
        &f.root,
        &["fit", "--resume", "dream3d-runs/fit-shapes", "--steps", "4"],
    )
    .output()
    .unwrap();
    common::assert_success(&out);
    assert!(more.is_file(), "the distribution went elsewhere");
    assert_eq!(std::fs::read(&latest).unwrap(), latest_before);
}

/// Ctrl-C, and SIGTERM (what a scheduler sends at the end of a job's time), stop a fit with a
/// checkpoint.
#[test]
fn ctrl_c_and_sigterm_leave_a_checkpoint_to_resume_from() {
    let f = fixture();
    let model = common::sd_tiny_dir().display().to_string();
    let refs = f.refs.display().to_string();
    for signal in ["INT", "TERM"] {
        let run = format!("run-{signal}");
        let child = cli(
            &f.root,
            &[
                "fit",
                &refs,
                "--model",
                &model,
                "--steps",
                "100000",
                "--prompts",
                "3",
                "--tokens",
                "2",
                "--resolution",
                "32",
                "--run-dir",
                &run,
            ],
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        let metrics = f.root.join(&run).join("metrics.jsonl");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count()) < 2 {
            assert!(std::time::Instant::now() < deadline, "fit did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = common::signal(child, signal);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "SIG{signal}: {stderr}");
        assert!(
            stderr.contains("interrupted") && stderr.contains("--resume"),
            "SIG{signal}: {stderr}"
        );
        let checkpoint = Checkpoint::load(
            &f.root.join(&run).join("checkpoint.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        assert!(checkpoint.next_step >= 2, "SIG{signal}");
    }
}

/// The objective on a fixed evaluation batch (fixed timesteps, noises and samples) over the
/// cached reference latents, for soft prompts `soft`.
fn evaluation_loss(sd: &StableDiffusion, config: &FitConfig, run: &RunDir, soft: &Tensor) -> f32 {
    use dream3d::prompt::learner::{
        diffusion_loss, encode, gaussian, orthogonality_loss, reparameterize,
    };
    use dream3d::prompt::{Frame, Template};
    let latents = run.path(dream3d::fit::LATENTS_FILE);
    let mut cache = dream3d::weights::TensorFile::read(&latents, &Device::Cpu).unwrap();
    let x0 = (cache.take("mean", None).unwrap() * sd.vae.config.scaling_factor).unwrap();
    let n = x0.dim(0).unwrap();
    // The same noise for every call (candle's own generator is unseeded).
    let noise = dream3d::random::randn(
        &mut dream3d::random::step_rng(0, 0),
        x0.dims(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let t: Vec<usize> = (0..n).map(|i| 50 + i * 900 / n).collect();
    let frame = Frame::new(
        &sd.text_encoder,
        &sd.tokenizer,
        &Template::default(),
        config.tokens,
        config.position_mode,
    )
    .unwrap();
    let mut total = 0.0;
    for seed in 0..4u64 {
        let eps = Tensor::from_vec(
            (0..n * 2 * 77 * 8)
                .map(|i| ((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0 - 1.0)
                .collect(),
            (n * 2, 77, 8),
            &Device::Cpu,
        )
        .unwrap();
        let enc = encode(&sd.text_encoder, &frame, soft).unwrap();
        let (mu, sigma) = gaussian(&enc.hidden).unwrap();
        let cond = reparameterize(&mu, &sigma, &eps).unwrap();
        let d = diffusion_loss(
            &sd.unet,
            &sd.schedule,
            &x0,
            &noise,
            &t,
            &cond,
            config.min_snr_gamma,
        )
        .unwrap();
        let o = orthogonality_loss(&enc.pooled).unwrap();
        total += (d + (o * config.orthogonality_weight).unwrap())
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
    }
    total / 4.0
}

#[test]
fn fitting_coloured_shapes_lowers_the_loss() {
    let f = fixture();
    let sd = model();
    let config = FitConfig {
        steps: 40,
        lr: 1e-2,
        checkpoint_every: 40,
        ..tiny_config(&f.refs)
    };
    let run = RunDir::create(&f.root.join("run"), &config).unwrap();
    let FitOutcome::Finished(dist) =
        fit(&config, &sd, &run, &AtomicBool::new(false), |_| {}).unwrap()
    else {
        panic!()
    };
    let init =
        dream3d::prompt::learner::init_soft_prompts(3, 2, 8, config.seed, DType::F32, &Device::Cpu)
            .unwrap();
    let before = evaluation_loss(&sd, &config, &run, init.as_tensor());
    let after = evaluation_loss(&sd, &config, &run, &dist.soft_prompts);
    eprintln!("evaluation loss {before} → {after}");
    assert!(after < 0.97 * before, "evaluation loss {before} → {after}");
}
