//! The official MVDream checkpoint layout: at full size every key of the real state dict is
//! consumed by our networks with its shape and nothing is left over (names and shapes only, no
//! weights allocated); and a tiny checkpoint written in that layout loads through the real
//! code path and computes what the original tensors compute.

mod common;

use common::mvdream::*;

use candle_core::{DType, Device, Tensor};
use dream3d::models::unet::Views;
use dream3d::models::{
    AutoencoderKL, ClipTextConfig, ClipTextModel, UNet2DConditionModel, VaeConfig,
};
use dream3d::mvdream::keys::Destination;
use dream3d::mvdream::{MvUNetParams, MvdreamArchitecture, MvdreamModel};
use dream3d::weights::Weights;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

fn requested(w: &Weights) -> BTreeMap<String, Vec<usize>> {
    w.tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dims().to_vec()))
        .collect()
}

#[test]
fn every_tensor_of_the_real_checkpoint_has_its_place() {
    let arch = MvdreamArchitecture::default();
    let shape = arch.checkpoint_shape();
    let tsv = std::fs::read_to_string(fixture(
        "mvdream_tiny/real_sd-v2.1-base-4view_state_dict_layout.tsv",
    ))
    .unwrap();
    let mut mapped: [BTreeMap<String, Vec<usize>>; 3] = Default::default();
    let mut rows = 0;
    let mut unused = vec![];
    for line in tsv.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split('\t').collect();
        let dims: Vec<usize> = serde_json::from_str(cols[1]).unwrap();
        rows += 1;
        match shape.destination(cols[0], &dims) {
            Some(Destination::Tensor {
                component,
                name,
                shape,
            }) => {
                mapped[component as usize].insert(name, shape.unwrap_or(dims));
            }
            Some(Destination::SplitRows { component, names }) => {
                for n in names {
                    let mut d = dims.clone();
                    d[0] /= 3;
                    mapped[component as usize].insert(n, d);
                }
            }
            Some(Destination::Unused) => unused.push(cols[0].to_string()),
            None => panic!("{} has no place in our networks", cols[0]),
        }
    }
    assert_eq!(rows, 1244);
    // The schedule buffers, the 24th text layer, the text projection and logit scale.
    assert_eq!(unused.len(), 12 + 12 + 2, "{unused:?}");

    let (unet_config, layout) = arch.unet.unet_config(Path::new("sd-v2-base.yaml")).unwrap();
    let w = Weights::placeholder();
    UNet2DConditionModel::load(unet_config, layout, &w).unwrap();
    assert_eq!(requested(&w), mapped[0], "UNet");
    let w = Weights::placeholder();
    AutoencoderKL::load(arch.vae.clone(), &w).unwrap();
    assert_eq!(requested(&w), mapped[1], "VAE");
    let w = Weights::placeholder();
    ClipTextModel::load(arch.text.clone(), Path::new("ViT-H-14"), &w).unwrap();
    assert_eq!(requested(&w), mapped[2], "text encoder");
}

#[test]
fn a_tiny_official_checkpoint_loads_and_computes_like_its_sources() {
    let unet_params: MvUNetParams = {
        let c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture("mvdream_tiny/config.json")).unwrap())
                .unwrap();
        serde_json::from_value(c["params"].clone()).unwrap()
    };
    let arch = MvdreamArchitecture {
        unet: unet_params,
        vae: VaeConfig::load(&fixture("sd_tiny/vae/config.json")).unwrap(),
        text: ClipTextConfig::load(&fixture("sd_tiny/text_encoder/config.json")).unwrap(),
    };
    let dev = Device::Cpu;
    let inputs =
        candle_core::safetensors::load(fixture("mvdream_tiny/inputs.safetensors"), &dev).unwrap();
    let expected =
        candle_core::safetensors::load(fixture("mvdream_tiny/expected.safetensors"), &dev).unwrap();
    let t: Vec<f64> = inputs["mv4.timesteps"]
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    let p = common::parity();
    let tensors = tiny_checkpoint();
    let dir = tempfile::tempdir().unwrap();
    // The official file is a PyTorch pickle; `dream3d convert` makes the safetensors copy.
    for file in ["tiny-4view.pt", "tiny-4view.safetensors"] {
        let path = dir.path().join(file);
        save_checkpoint(&tensors, &path);
        let read = dream3d::mvdream::checkpoint::read_state_dict(&path).unwrap();
        let mut written: Vec<&String> = tensors.keys().collect();
        written.sort();
        assert_eq!(
            read.keys().collect::<Vec<_>>(),
            written,
            "{file}: tensors read"
        );
        let model = MvdreamModel::load(&path, &arch, DType::F32, &dev).unwrap();
        let out = model
            .unet
            .forward_views(
                &inputs["mv4.x"],
                &t,
                &inputs["mv4.context"],
                Views {
                    camera: Some(&inputs["mv4.camera"]),
                    frames: 4,
                },
            )
            .unwrap();
        assert!(
            common::max_abs_diff(&out, &expected["mv4.out"]) <= 1e-4,
            "{file}: UNet"
        );
        let hidden = model.text_encoder.forward(&p["text.input_ids"]).unwrap();
        assert!(
            common::max_abs_diff(&hidden, &p["text.last_hidden_state"]) <= 1e-4,
            "{file}: text encoder"
        );
        let decoded = model.vae.decode(&p["vae.dec_input"]).unwrap();
        assert!(
            common::max_abs_diff(&decoded, &p["vae.dec_output"]) <= 1e-4,
            "{file}: VAE"
        );

        // A tensor no network takes is refused by name.
        let mut extra = tensors.clone();
        extra.insert(
            "model.diffusion_model.bogus.weight".into(),
            Tensor::zeros(2, DType::F32, &dev).unwrap(),
        );
        let bad = dir.path().join(format!("bad-{file}"));
        save_checkpoint(&extra, &bad);
        let err = MvdreamModel::load(&bad, &arch, DType::F32, &dev)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("model.diffusion_model.bogus.weight"),
            "{file}: {err}"
        );
    }
}

/// `dream3d sample` in `dir` with `args`: 2 DDIM steps at 32 px.
fn sample(dir: &Path, args: &[&str]) -> std::process::Output {
    common::dream3d(dir)
        .arg("sample")
        .args(["--steps", "2", "--width", "32", "--height", "32"])
        .args(args)
        .output()
        .unwrap()
}

/// The `samples.json` sidecar of `dream3d sample`'s output folder.
fn sidecar(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("samples.json")).unwrap()).unwrap()
}

#[test]
fn four_view_previews_from_a_checkpoint_with_its_yaml() {
    let dir = tempfile::tempdir().unwrap();
    write_consistent_tiny(dir.path(), "tiny-4view.safetensors");
    let out = sample(
        dir.path(),
        &[
            "--mvdream",
            "tiny-4view.safetensors",
            "--prompt",
            "a chair",
            "-n",
            "2",
            "--seed",
            "3",
            "-o",
            "mv",
        ],
    );
    common::assert_success(&out);
    let mv = dir.path().join("mv");
    let open = |f: &str| image::open(mv.join(f)).unwrap().to_rgb8();
    let (w, h) = (32, 32);
    let mut strips = vec![];
    for object in 0..2 {
        let views: Vec<_> = (0..4)
            .map(|v| open(&format!("{object:04}-view{v}.png")))
            .collect();
        for view in &views {
            assert_eq!(view.dimensions(), (w, h));
        }
        // The object's 4 views side by side in one row, as the official script saves them.
        let strip = open(&format!("{object:04}.png"));
        assert_eq!(strip.height(), h, "one row");
        let gaps = strip.width() - 4 * w;
        assert_eq!(gaps % 3, 0, "equal gaps between 4 views");
        for (v, view) in views.iter().enumerate() {
            let x = v as u32 * (w + gaps / 3);
            let placed = image::imageops::crop_imm(&strip, x, 0, w, h).to_image();
            assert!(placed == *view, "view {v} of object {object} in its strip");
        }
        strips.push(strip);
    }
    // The grid: one object per row.
    let grid = open("grid.png");
    let gap = (strips[0].width() - 4 * w) / 3;
    assert_eq!(grid.dimensions(), (strips[0].width(), 2 * h + gap));
    for (row, strip) in strips.iter().enumerate() {
        let y = row as u32 * (h + gap);
        let placed = image::imageops::crop_imm(&grid, 0, y, strip.width(), h).to_image();
        assert!(placed == *strip, "object {row} in the grid");
    }
    let record = sidecar(&mv);
    assert_eq!(record["views"], 4);
    assert!(record["conditioning"]
        .as_str()
        .unwrap()
        .contains("a chair, 3d asset"));
    // The views of one object differ (different cameras), and so do the objects.
    let read = |f: &str| std::fs::read(mv.join(f)).unwrap();
    assert_ne!(read("0000-view0.png"), read("0000-view1.png"));
    assert_ne!(read("0000-view0.png"), read("0001-view0.png"));

    // `--init-noise` gives every object the same 4 views' latents: with a plain prompt (σ = 0)
    // both objects come out the same.
    let noise = common::uniform(&[4, 4, 16, 16], 5, DType::F32);
    candle_core::safetensors::save(
        &HashMap::from([("latents".to_string(), noise)]),
        dir.path().join("noise.safetensors"),
    )
    .unwrap();
    let out = sample(
        dir.path(),
        &[
            "--mvdream",
            "tiny-4view.safetensors",
            "--prompt",
            "a chair",
            "-n",
            "2",
            "--init-noise",
            "noise.safetensors",
            "-o",
            "same",
        ],
    );
    common::assert_success(&out);
    let same = dir.path().join("same");
    for v in 0..4 {
        let view = |o: usize| std::fs::read(same.join(format!("{o:04}-view{v}.png"))).unwrap();
        assert_eq!(view(0), view(1), "view {v}");
    }

    let out = sample(
        dir.path(),
        &[
            "--mvdream",
            "tiny-4view.safetensors",
            "--views",
            "3",
            "--prompt",
            "x",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("trained on 4 views"));
}

/// `--no-asset-suffix`, `--elevation` and `--azimuth` change what the model is given, and the
/// sidecar records them.
#[test]
fn preview_flags_reach_the_model_and_the_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    write_consistent_tiny(dir.path(), "tiny-4view.safetensors");
    let run = |out: &str, flags: &[&str]| {
        let mut args = vec![
            "--mvdream",
            "tiny-4view.safetensors",
            "--prompt",
            "a chair",
            "-n",
            "1",
            "--seed",
            "3",
            "-o",
            out,
        ];
        args.extend(flags);
        common::assert_success(&sample(dir.path(), &args));
        let object = std::fs::read(dir.path().join(out).join("0000.png")).unwrap();
        (object, sidecar(&dir.path().join(out)))
    };
    let (default, record) = run("default", &[]);
    assert_eq!(record["conditioning"], "\"a chair, 3d asset\"");
    let command = record["command"].as_str().unwrap();
    assert!(
        command.contains("--elevation 15") && command.contains("--azimuth 90"),
        "the official script's cameras by default: {command}"
    );

    let (plain, record) = run("plain", &["--no-asset-suffix"]);
    assert_eq!(record["conditioning"], "\"a chair\"");
    assert!(record["command"]
        .as_str()
        .unwrap()
        .contains("--no-asset-suffix"));
    assert_ne!(plain, default, "the prompt without its suffix");

    let (turned, record) = run("turned", &["--elevation", "30", "--azimuth", "0"]);
    let command = record["command"].as_str().unwrap();
    assert!(
        command.contains("--elevation 30") && command.contains("--azimuth 0"),
        "{command}"
    );
    assert_ne!(turned, default, "other cameras");
}

/// `sample --mvdream` from a prompt distribution fitted on MVDream's own text tower: each
/// object draws its own conditioning, and γ = 0 gives every object the mean.
#[test]
fn four_view_previews_from_a_prompt_distribution() {
    use dream3d::diffusion::PredictionType;
    use dream3d::prompt::{learner, DistributionMeta, Frame, PositionMode, PromptDistribution};
    let dir = tempfile::tempdir().unwrap();
    let mv = load_consistent_tiny(dir.path());
    let template = dream3d::prompt::Template {
        prefix: "a".into(),
        suffix: "chair".into(),
    };
    let frame = Frame::new(
        &mv.text_encoder,
        &mv.tokenizer,
        &template,
        2,
        PositionMode::Official,
    )
    .unwrap();
    // Soft tokens far apart (the learner starts at N(0, 0.02²)), so that σ shows in the images.
    let soft = common::uniform(&[3, 2, 32], 11, DType::F32);
    let encoded = learner::encode(&mv.text_encoder, &frame, &soft).unwrap();
    let (mu, sigma) = learner::gaussian(&encoded.hidden).unwrap();
    let text = &mv.text_encoder.config;
    let fitted = PromptDistribution {
        soft_prompts: soft,
        mu,
        sigma,
        meta: DistributionMeta {
            format: "dream3d-prompt-distribution".into(),
            format_version: dream3d::prompt::distribution::FORMAT_VERSION,
            base_model: "tiny-4view.safetensors".into(),
            text_hidden_size: text.hidden_size,
            text_layers: text.num_hidden_layers,
            text_vocab: text.vocab_size,
            prediction_type: PredictionType::Epsilon,
            prompts: 3,
            tokens_per_prompt: 2,
            prefix: template.prefix,
            suffix: template.suffix,
            position_mode: PositionMode::Official,
            steps: 0,
            seed: 11,
            dream3d_version: env!("CARGO_PKG_VERSION").into(),
        },
    };
    fitted
        .save(&dir.path().join("chairs.dist.safetensors"))
        .unwrap();
    // Both objects start from the same latents: only their conditioning can tell them apart.
    let noise = common::uniform(&[4, 4, 16, 16], 5, DType::F32);
    candle_core::safetensors::save(
        &HashMap::from([("latents".to_string(), noise)]),
        dir.path().join("noise.safetensors"),
    )
    .unwrap();
    let run = |distribution: &str, out: &str, flags: &[&str]| {
        let mut args = vec![
            distribution,
            "--mvdream",
            "tiny-4view.safetensors",
            "-n",
            "2",
            "--init-noise",
            "noise.safetensors",
            "-o",
            out,
        ];
        args.extend(flags);
        sample(dir.path(), &args)
    };
    let view = |out: &str, object: usize| {
        std::fs::read(dir.path().join(format!("{out}/{object:04}-view0.png"))).unwrap()
    };

    common::assert_success(&run("chairs.dist.safetensors", "drawn", &[]));
    assert_ne!(view("drawn", 0), view("drawn", 1), "a draw per object");
    let drawn = dir.path().join("drawn");
    for v in 0..4 {
        assert!(drawn.join(format!("0001-view{v}.png")).is_file());
    }
    let conditioning = sidecar(&drawn)["conditioning"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        conditioning.contains("\"a * chair\"") && conditioning.contains("chairs.dist.safetensors"),
        "{conditioning}"
    );
    assert!(!conditioning.contains("3d asset"), "{conditioning}");
    assert!(drawn.join("conditioning-0.dist.safetensors").is_file());

    common::assert_success(&run("chairs.dist.safetensors", "mean", &["--gamma", "0"]));
    assert_eq!(view("mean", 0), view("mean", 1), "γ = 0: the mean for both");

    // A distribution of another text encoder is refused before sampling.
    let mut other = fitted;
    other.meta.text_layers = 23;
    other
        .save(&dir.path().join("other.dist.safetensors"))
        .unwrap();
    let out = run("other.dist.safetensors", "other", &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("23 layers"));
}

#[test]
fn pickles_are_read_flat_or_under_state_dict() {
    for file in ["flat.pt", "lightning.pt"] {
        let t =
            dream3d::mvdream::checkpoint::read_state_dict(&fixture(&format!("mvdream_pt/{file}")))
                .unwrap();
        assert_eq!(t.len(), 2, "{file}");
        let bias = t["model.diffusion_model.camera_embed.0.bias"]
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(bias, [0.0, 1.0, 2.0, 3.0], "{file}");
    }
}

/// `dream3d convert ARGS` run in `dir`.
fn convert(dir: &Path, args: &[&str]) -> std::process::Output {
    common::dream3d(dir)
        .arg("convert")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn convert_writes_a_checked_safetensors_copy() {
    let dir = tempfile::tempdir().unwrap();
    save_checkpoint(&tiny_checkpoint(), &dir.path().join("tiny-4view.pt"));
    // The tiny checkpoint is not sd-v2-base.yaml's size: the check names a misplaced tensor.
    let out = convert(dir.path(), &["tiny-4view.pt", "-o", "copy.safetensors"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an MVDream checkpoint"));
    assert!(
        !dir.path().join("copy.safetensors").exists(),
        "nothing written"
    );

    // With its architecture beside it, the pickle's tensors are copied unchanged into
    // `<stem>.safetensors`, which loads.
    let dir = tempfile::tempdir().unwrap();
    write_consistent_tiny(dir.path(), "tiny-4view.pt");
    common::assert_success(&convert(dir.path(), &["tiny-4view.pt"]));
    let read = dream3d::mvdream::checkpoint::read_state_dict;
    let original = read(&dir.path().join("tiny-4view.pt")).unwrap();
    let copy_path = dir.path().join("tiny-4view.safetensors");
    let copy = read(&copy_path).unwrap();
    assert!(copy.keys().eq(original.keys()));
    for (name, t) in &original {
        assert_eq!(common::max_abs_diff(&copy[name], t), 0.0, "{name}");
    }
    let arch =
        MvdreamArchitecture::from_yaml(&dir.path().join("tiny-4view.yaml"), &copy_path).unwrap();
    assert!(MvdreamModel::load(&copy_path, &arch, DType::F32, &Device::Cpu).is_ok());
    let again = convert(dir.path(), &["tiny-4view.pt"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn the_checkpoint_is_found_in_the_hf_cache_or_explained() {
    use dream3d::mvdream::checkpoint::find_checkpoint;
    let cache = tempfile::tempdir().unwrap();
    let lookup = dream3d::weights::Lookup {
        cache: cache.path().to_path_buf(),
        offline: true,
        ..dream3d::weights::Lookup::default()
    };
    let err = find_checkpoint(&lookup, "MVDream/MVDream")
        .unwrap_err()
        .to_string();
    assert!(err.contains("models--MVDream--MVDream"), "{err}");
    let snapshot = common::hf_snapshot(cache.path(), "MVDream/MVDream", "abc123");
    std::fs::write(snapshot.join("sd-v2.1-base-4view.pt"), b"").unwrap();
    assert_eq!(
        find_checkpoint(&lookup, "MVDream/MVDream").unwrap(),
        snapshot.join("sd-v2.1-base-4view.pt")
    );
    // The converted copy is preferred.
    std::fs::write(snapshot.join("sd-v2.1-base-4view.safetensors"), b"").unwrap();
    assert_eq!(
        find_checkpoint(&lookup, "MVDream/MVDream").unwrap(),
        snapshot.join("sd-v2.1-base-4view.safetensors")
    );
}

#[test]
fn an_unknown_text_tower_needs_its_open_clip_config() {
    let dir = tempfile::tempdir().unwrap();
    let configs = dir.path().join("configs");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&configs).unwrap();
    std::fs::create_dir_all(&models).unwrap();
    let yaml = configs.join("big.yaml");
    let checkpoint = models.join("big-4view.pt");
    std::fs::write(&yaml, TINY_YAML.replace("tiny-text", "ViT-bigG-14")).unwrap();
    let err = MvdreamArchitecture::from_yaml(&yaml, &checkpoint)
        .unwrap_err()
        .to_string();
    for place in [&configs, &models] {
        let json = place.join("ViT-bigG-14.json");
        assert!(err.contains(&json.display().to_string()), "{err}");
    }
    // Found beside the checkpoint.
    std::fs::write(
        models.join("ViT-bigG-14.json"),
        TINY_TEXT_JSON.replace("\"width\": 32", "\"width\": 48"),
    )
    .unwrap();
    let arch = MvdreamArchitecture::from_yaml(&yaml, &checkpoint).unwrap();
    assert_eq!(arch.text.hidden_size, 48);
}

/// An architecture given with `--mvdream-config` from another folder, its text tower's
/// open_clip config beside the checkpoint (a `.pt`, as the official one).
#[test]
fn previews_with_an_explicit_config_from_another_folder() {
    let dir = tempfile::tempdir().unwrap();
    let configs = dir.path().join("configs");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&configs).unwrap();
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(configs.join("tiny.yaml"), TINY_YAML).unwrap();
    std::fs::write(models.join("tiny-text.json"), TINY_TEXT_JSON).unwrap();
    let checkpoint = models.join("tiny-4view.pt");
    let arch = MvdreamArchitecture::from_yaml(&configs.join("tiny.yaml"), &checkpoint).unwrap();
    save_checkpoint(&consistent_tiny(&arch), &checkpoint);

    let args = ["--mvdream", "models/tiny-4view.pt", "--prompt", "a chair"];
    // Without the config, sd-v2-base.yaml's architecture does not fit.
    let out = sample(dir.path(), &args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loading MVDream"));
    let flags = [
        "--mvdream-config",
        "configs/tiny.yaml",
        "-n",
        "1",
        "-o",
        "mv",
    ];
    let out = sample(dir.path(), &[&args[..], &flags].concat());
    common::assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("configs/tiny.yaml"));
    let mv = dir.path().join("mv");
    assert!(mv.join("0000.png").is_file());
    let command = sidecar(&mv)["command"].as_str().unwrap().to_string();
    let config = dir.path().join("configs/tiny.yaml");
    assert!(
        command.contains(&format!("--mvdream-config {}", config.display())),
        "{command}"
    );
}

#[test]
fn generate_distils_checkpoints_resumes_and_exports() {
    let dir = generate_dir();
    let generate = |extra: &[&str]| {
        common::dream3d(dir.path())
            .arg("generate")
            .args(["--mvdream", "tiny-4view.safetensors"])
            .args(["--resolution", "48", "--threshold", "5", "--frames", "3"])
            .args(extra)
            .output()
            .unwrap()
    };
    // 10 steps; resumed towards 30 and stopped by Ctrl-C on the way; resumed again to 30.
    let out = generate(&[
        "--prompt",
        "a chair",
        "--config",
        "small.toml",
        "--steps",
        "10",
        "--seed",
        "4",
        "--run-dir",
        "run",
        "-o",
        "first.glb",
    ]);
    common::assert_success(&out);
    let run = dir.path().join("run");
    for file in [
        "config.toml",
        "conditioning.safetensors",
        "field.safetensors",
        "metrics.jsonl",
    ] {
        assert!(run.join(file).is_file(), "{file}");
    }
    assert!(run.join("validation/step-00010.png").is_file());
    let field = dream3d::gpu::GpuField::load(
        std::sync::Arc::new(dream3d::gpu::GpuContext::new().unwrap()),
        &run.join("field.safetensors"),
    )
    .unwrap();
    assert_eq!(field.step, 10);

    let child = common::dream3d(dir.path())
        .args([
            "generate",
            "--mvdream",
            "tiny-4view.safetensors",
            "--resume",
            "run",
        ])
        .args(["--steps", "30", "-o", "never.glb"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let logged =
        || std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |m| m.lines().count());
    let waited = std::time::Instant::now();
    while logged() < 13 {
        assert!(
            waited.elapsed().as_secs() < 300,
            "the resumed run makes no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = common::interrupt(child);
    common::assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interrupted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("never.glb").exists());
    let field = dream3d::gpu::GpuField::load(
        std::sync::Arc::new(dream3d::gpu::GpuContext::new().unwrap()),
        &run.join("field.safetensors"),
    )
    .unwrap();
    assert!((13..30).contains(&field.step), "stopped at {}", field.step);

    let out = generate(&["--resume", "run", "--steps", "30", "-o", "out.glb"]);
    common::assert_success(&out);
    assert_eq!(
        logged_steps(&run),
        (0..30).collect::<Vec<_>>(),
        "each step logged once"
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    for line in metrics.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(m["loss"].as_f64().unwrap().is_finite());
        assert!((0..1000).contains(&m["t"].as_u64().unwrap()));
    }
    let issues = common::validate_gltf(&dir.path().join("out.glb"));
    assert_eq!(issues["numErrors"], 0, "{issues}");
    assert_eq!(issues["numWarnings"], 0, "{issues}");
    assert!(run.join("turntable.gif").is_file());

    // Only MVDream's 4 views, and runs are not overwritten.
    let out = generate(&["--prompt", "a chair", "--views", "2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--views 4"));
    let out = generate(&[
        "--prompt",
        "a chair",
        "--config",
        "small.toml",
        "--run-dir",
        "run",
        "-o",
        "again.glb",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--resume"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Both stages on the tiny MVDream: the field, then the mesh stage, interrupted by Ctrl-C
/// inside it and resumed; every step of the three phases logged once, validation grids of each
/// phase, and a refined mesh exported as a valid .glb with its turntable.
#[test]
fn generate_refines_a_mesh_resumes_inside_that_stage_and_exports_it() {
    let dir = generate_dir();
    let run = dir.path().join("run");
    let generate = || {
        let mut cmd = common::dream3d(dir.path());
        cmd.args([
            "generate",
            "--mvdream",
            "tiny-4view.safetensors",
            "--frames",
            "3",
        ]);
        cmd
    };
    let mut child = generate()
        .args(["--prompt", "a chair", "--config", "small.toml"])
        .args(["--steps", "10", "--refine-steps", "20"])
        .args(["--seed", "4", "--run-dir", "run", "-o", "mesh.glb"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let logged =
        || std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |m| m.lines().count());
    let waited = std::time::Instant::now();
    while logged() < 13 {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "generate ended before the mesh stage: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            waited.elapsed().as_secs() < 300,
            "the run does not reach the mesh stage"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = common::interrupt(child);
    common::assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(run.join("surface.safetensors").is_file(), "{stderr}");
    assert!(!dir.path().join("mesh.glb").exists());
    let stopped = logged();
    assert!((13..50).contains(&stopped), "stopped after {stopped} steps");

    // The field's steps are fixed once the mesh stage has begun.
    let out = generate()
        .args(["--resume", "run", "--steps", "12", "-o", "mesh.glb"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the mesh stage has begun"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = generate()
        .args(["--resume", "run", "-o", "mesh.glb"])
        .output()
        .unwrap();
    common::assert_success(&out);
    assert_eq!(
        logged_steps(&run),
        (0..50).collect::<Vec<_>>(),
        "each step of the field, geometry and texture phases logged once"
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let phases: Vec<String> = metrics
        .lines()
        .map(|l| {
            let m: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(m["loss"].as_f64().unwrap().is_finite(), "{l}");
            m["phase"].as_str().unwrap_or("field").to_string()
        })
        .collect();
    assert_eq!(phases[9], "field");
    assert_eq!(phases[10], "geometry");
    assert_eq!(phases[29], "geometry");
    assert_eq!(phases[30], "texture");
    for grid in [
        "geometry-00010.png",
        "geometry-00020.png",
        "texture-00020.png",
    ] {
        assert!(run.join("validation").join(grid).is_file(), "{grid}");
    }
    assert!(run.join("texture.safetensors").is_file());
    assert!(run.join("turntable.gif").is_file());
    let glb = dir.path().join("mesh.glb");
    let issues = common::validate_gltf(&glb);
    assert_eq!(issues["numErrors"], 0, "{issues}");
    assert_eq!(issues["numWarnings"], 0, "{issues}");
    let bytes = std::fs::read(&glb).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("\"method\":\"dmtet\""),
        "the export is not the refined surface"
    );

    // A texture field gone non-finite stops the run, its last checkpoint kept.
    let good = std::fs::read(run.join("texture.safetensors")).unwrap();
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let at = config
        .rfind("lr_grid = 0.01")
        .expect("the texture's AdamW in config.toml");
    let absurd = format!("{}lr_grid = 1e39{}", &config[..at], &config[at + 14..]);
    assert!(
        absurd.contains("lr_grid = 0.01"),
        "the field's own AdamW changed"
    );
    // Five more texture steps (the geometry's are fixed once the texture phase has begun).
    let absurd = absurd.replace("texture_steps = 20", "texture_steps = 25");
    std::fs::write(run.join("config.toml"), absurd).unwrap();
    let out = generate()
        .args(["--resume", "run", "-o", "again.glb"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("step 50: the texture's field went non-finite"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(run.join("texture.safetensors")).unwrap(),
        good,
        "the texture's checkpoint changed"
    );
}

/// A folder with the tiny MVDream (`tiny-4view.safetensors`) and [`GENERATE_TOML`] as
/// `small.toml`.
fn generate_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_consistent_tiny(dir.path(), "tiny-4view.safetensors");
    std::fs::write(dir.path().join("small.toml"), GENERATE_TOML).unwrap();
    dir
}

/// The `step` of each line of a run's metrics.jsonl.
fn logged_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// `dream3d generate` in `dir` on the tiny MVDream with [`GENERATE_TOML`]'s settings.
fn small_generate(dir: &Path) -> std::process::Command {
    let mut cmd = common::dream3d(dir);
    cmd.arg("generate")
        .args(["--mvdream", "tiny-4view.safetensors"])
        .args(["--resolution", "48", "--threshold", "5", "--frames", "0"]);
    cmd
}

/// `generate --assets 3` stopped by SIGTERM (what schedulers send) during asset 0: the later
/// assets have no run directory yet, and resuming the parent finishes all three, each step of
/// each asset logged once.
#[test]
fn several_assets_resume_from_their_plan() {
    let dir = generate_dir();
    let child = small_generate(dir.path())
        .args([
            "--prompt",
            "a chair",
            "--config",
            "small.toml",
            "--steps",
            "8",
        ])
        .args([
            "--assets",
            "3",
            "--seed",
            "4",
            "--run-dir",
            "runs",
            "-o",
            "out.glb",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let runs = dir.path().join("runs");
    let logged = |i: usize| {
        std::fs::read_to_string(runs.join(format!("asset-{i:04}/metrics.jsonl")))
            .map_or(0, |m| m.lines().count())
    };
    let waited = std::time::Instant::now();
    while logged(0) < 3 {
        assert!(
            waited.elapsed().as_secs() < 300,
            "asset 0 makes no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = common::signal(child, "TERM");
    common::assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("interrupted in asset 1 of 3"), "{stderr}");
    assert!(runs.join("plan.toml").is_file());
    assert!(runs.join("asset-0000/field.safetensors").is_file());
    assert!(
        !runs.join("asset-0001").exists(),
        "asset 1 was made before it started"
    );
    assert!(!dir.path().join("out-0000.glb").exists());

    let out = small_generate(dir.path())
        .args(["--resume", "runs"])
        .output()
        .unwrap();
    common::assert_success(&out);
    for i in 0..3 {
        let issues = common::validate_gltf(&dir.path().join(format!("out-{i:04}.glb")));
        assert_eq!(issues["numErrors"], 0, "asset {i}: {issues}");
        assert_eq!(
            logged_steps(&runs.join(format!("asset-{i:04}"))),
            (0..8).collect::<Vec<_>>(),
            "asset {i}: each step logged once"
        );
        let config =
            std::fs::read_to_string(runs.join(format!("asset-{i:04}/config.toml"))).unwrap();
        assert!(
            config.contains(&format!("seed = {}", 4 + i)),
            "asset {i}: {config}"
        );
    }

    // A finished plan resumed again has nothing left to do.
    let out = small_generate(dir.path())
        .args(["--resume", "runs"])
        .output()
        .unwrap();
    common::assert_success(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .matches("finished earlier")
            .count(),
        3,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `generate --assets 3` as two shards sharing one parent directory: each makes its assets
/// (by flag, and as a Slurm array task), a shard run again skips what it made, and `collect`
/// finds all three valid.
#[test]
fn sharded_generate_fills_one_parent_and_collects() {
    let dir = generate_dir();
    let shard = |extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = small_generate(dir.path());
        cmd.args([
            "--prompt",
            "a chair",
            "--config",
            "small.toml",
            "--steps",
            "3",
        ])
        .args([
            "--assets",
            "3",
            "--seed",
            "4",
            "--run-dir",
            "runs",
            "-o",
            "out.glb",
        ])
        .args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    common::assert_success(&shard(&["--shard", "1/2"], &[]));
    let out = shard(
        &[],
        &[
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ],
    );
    common::assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shard 0/2 (Slurm array task)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = dir.path().join("runs");
    for tag in ["shard-0-of-2", "shard-1-of-2"] {
        assert!(runs.join(format!("plan.{tag}.toml")).is_file(), "{tag}");
        assert!(
            runs.join(format!("manifest.{tag}.jsonl")).is_file(),
            "{tag}"
        );
    }
    for i in 0..3 {
        let issues = common::validate_gltf(&dir.path().join(format!("out-{i:04}.glb")));
        assert_eq!(issues["numErrors"], 0, "asset {i}: {issues}");
        let config =
            std::fs::read_to_string(runs.join(format!("asset-{i:04}/config.toml"))).unwrap();
        assert!(
            config.contains(&format!("seed = {}", 4 + i)),
            "asset {i}: {config}"
        );
    }
    // Requeued: the same command again finds its plan and its assets made.
    let out = shard(&["--shard", "0/2"], &[]);
    common::assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("continuing the plan of shard 0/2"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("finished earlier").count(), 2, "{stderr}");
    let out = common::dream3d(&runs)
        .args(["collect", "."])
        .output()
        .unwrap();
    common::assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 of 3 items"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A field that goes non-finite in its AdamW update (an absurd hash-grid learning rate) stops
/// the run with the group named, and the run's field stays the last good checkpoint.
#[test]
fn a_non_finite_field_stops_the_run_and_keeps_the_last_checkpoint() {
    let dir = generate_dir();
    let out = small_generate(dir.path())
        .args([
            "--prompt",
            "a chair",
            "--config",
            "small.toml",
            "--steps",
            "5",
        ])
        .args(["--seed", "4", "--run-dir", "run", "-o", "first.glb"])
        .output()
        .unwrap();
    common::assert_success(&out);
    let run = dir.path().join("run");
    let good = std::fs::read(run.join("field.safetensors")).unwrap();

    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let absurd = config.replace("lr_grid = 0.01", "lr_grid = 1e39");
    assert_ne!(absurd, config, "no lr_grid in {config}");
    std::fs::write(run.join("config.toml"), absurd).unwrap();
    let out = small_generate(dir.path())
        .args(["--resume", "run", "--steps", "10", "-o", "second.glb"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("step 5: the field's parameters went non-finite"),
        "{stderr}"
    );
    assert!(stderr.contains("hash level 0"), "{stderr}");
    assert_eq!(
        std::fs::read(run.join("field.safetensors")).unwrap(),
        good,
        "the checkpoint changed"
    );
    let field = dream3d::gpu::GpuField::load(
        std::sync::Arc::new(dream3d::gpu::GpuContext::new().unwrap()),
        &run.join("field.safetensors"),
    )
    .unwrap();
    assert_eq!(field.step, 5);
    assert!(field.params().unwrap().iter().all(|p| p.is_finite()));
    assert!(!dir.path().join("second.glb").exists());
}

/// MVDream-threestudio's `MultiviewDiffusionGuidance.forward` on the tiny UNet, run by
/// `tests/fixtures/make_mvdream_guidance.py` with the official code: the gradient on the latents
/// for fixed latents, prompt embeddings, cameras, timesteps and noise, with the default x0
/// reconstruction (std rescale 0.5), without the rescale, and classic SDS.
#[test]
fn multiview_guidance_matches_mvdream_threestudio() {
    use dream3d::camera::Camera;
    use dream3d::distill::guidance::{Guidance, GuidanceLoss, GuidanceSettings, MultiViewGuidance};
    let dir = tempfile::tempdir().unwrap();
    let mv = load_consistent_tiny(dir.path());
    let f =
        candle_core::safetensors::load(fixture("mvdream_tiny/guidance.safetensors"), &Device::Cpu)
            .unwrap();
    let c2w = f["c2w"]
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec3::<f64>()
        .unwrap();
    let cameras: Vec<Camera> = c2w
        .iter()
        .map(|m| Camera {
            c2w: nalgebra::Matrix4::from_fn(|r, c| m[r][c]),
            fov_y: 40.0,
        })
        .collect();
    for (case, rescale, loss) in [
        ("recon", 0.5, GuidanceLoss::Reconstruction),
        ("recon_plain", 0.0, GuidanceLoss::Reconstruction),
        ("sds", 0.5, GuidanceLoss::Sds),
    ] {
        let guidance = MultiViewGuidance {
            unet: &mv.unet,
            schedule: &mv.schedule,
            cond: f["cond"].clone(),
            uncond: f["uncond"].clone(),
            views: 4,
            settings: GuidanceSettings {
                scale: 50.0,
                rescale,
                loss,
            },
        };
        let t = f[&format!("{case}.t")].to_vec1::<i64>().unwrap()[0] as usize;
        let got = guidance
            .gradient(&f["latents"], &cameras, t, &f[&format!("{case}.noise")])
            .unwrap();
        let want = &f[&format!("{case}.grad")];
        let err = common::max_abs_diff(&got.grad, want) / common::max_abs(want);
        let want_loss = f[&format!("{case}.loss")].to_vec1::<f64>().unwrap()[0];
        let loss_err = (got.loss - want_loss).abs() / want_loss.abs();
        eprintln!("{case}: gradient relative error {err:.1e}, loss {loss_err:.1e}");
        assert!(err < 1e-5, "{case}: gradient relative error {err:.2e}");
        assert!(loss_err < 1e-5, "{case}: loss {} vs {want_loss}", got.loss);
    }
}

/// What `MultiViewGuidance` adds to the formula: both branches batched in one UNet call, in
/// (prompt, negative) order, with the views' cameras (the values against the official code are
/// checked by [`multiview_guidance_matches_mvdream_threestudio`]).
#[test]
fn multiview_guidance_batches_both_branches_in_one_unet_call() {
    use dream3d::camera::Camera;
    use dream3d::distill::guidance::{
        latent_gradient, Guidance, GuidanceSettings, MultiViewGuidance,
    };
    use dream3d::models::unet::Views;
    let dir = tempfile::tempdir().unwrap();
    let mv = load_consistent_tiny(dir.path());
    let dev = Device::Cpu;
    let cond = common::uniform(&[1, 77, 32], 1, DType::F32);
    let uncond = common::uniform(&[1, 77, 32], 2, DType::F32);
    let guidance = MultiViewGuidance {
        unet: &mv.unet,
        schedule: &mv.schedule,
        cond: cond.clone(),
        uncond: uncond.clone(),
        views: 4,
        settings: GuidanceSettings::default(),
    };
    let cameras: Vec<Camera> = (0..4)
        .map(|k| Camera::orbit(10.0, 30.0 + 90.0 * k as f64, 2.5, 40.0))
        .collect();
    let latents = common::uniform(&[4, 4, 8, 8], 3, DType::F32);
    let noise = common::uniform(&[4, 4, 8, 8], 4, DType::F32);
    let t = 600;
    let got = guidance.gradient(&latents, &cameras, t, &noise).unwrap();

    // By hand: one UNet call per branch with the normalised c2w rows, then the formula.
    let camera_rows: Vec<f32> = cameras
        .iter()
        .flat_map(|c| c.mvdream_conditioning().map(|v| v as f32))
        .collect();
    let camera = Tensor::from_vec(camera_rows, (4, 16), &dev).unwrap();
    let alpha = mv.schedule.alphas_cumprod[t];
    let noisy = mv.schedule.add_noise(&latents, &noise, t).unwrap();
    let branch = |context: &Tensor| {
        let out = mv
            .unet
            .forward_views(
                &noisy,
                &[t as f64; 4],
                &context.repeat((4, 1, 1)).unwrap(),
                Views {
                    camera: Some(&camera),
                    frames: 4,
                },
            )
            .unwrap();
        mv.schedule.split_prediction(&noisy, &out, alpha).unwrap()
    };
    let (x0_c, eps_c) = branch(&cond);
    let (x0_u, eps_u) = branch(&uncond);
    let want = latent_gradient(
        &GuidanceSettings::default(),
        4,
        &latents,
        &noise,
        alpha,
        (&x0_c, &eps_c),
        (&x0_u, &eps_u),
    )
    .unwrap();
    let diff = common::max_abs_diff(&got.grad, &want.grad);
    let scale = common::max_abs(&want.grad);
    assert!(diff <= 1e-4 * scale, "{diff} vs {scale}");
    assert!((got.loss - want.loss).abs() <= 1e-4 * want.loss);
    // Swapping the prompts changes the gradient: the branches are not interchangeable.
    let swapped = MultiViewGuidance {
        cond: uncond,
        uncond: cond,
        ..guidance
    };
    let other = swapped.gradient(&latents, &cameras, t, &noise).unwrap();
    assert!(common::max_abs_diff(&other.grad, &want.grad) > 1e-3 * scale);
}
