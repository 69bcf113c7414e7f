//! The multi-view UNet against the official MVDream code (tests/fixtures/mvdream_tiny: random
//! weights saved under the official names, inputs and outputs made with the official code).

mod common;

use candle_core::{DType, Device, Tensor};
use dream3d::models::unet::{UNetTrace, Views};
use dream3d::models::UNet2DConditionModel;
use dream3d::mvdream::weights::load_unet;
use dream3d::mvdream::MvUNetParams;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

const TOL: f32 = 1e-4;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mvdream_tiny")
}

fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join(name), &Device::Cpu).unwrap()
}

fn tiny_params() -> MvUNetParams {
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("config.json")).unwrap()).unwrap();
    serde_json::from_value(config["params"].clone()).unwrap()
}

fn model() -> UNet2DConditionModel {
    let weights: BTreeMap<String, Tensor> = load("weights.safetensors").into_iter().collect();
    load_unet(
        &tiny_params(),
        weights,
        &dir().join("weights.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
    .0
}

fn timesteps(t: &Tensor) -> Vec<f64> {
    t.to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect()
}

fn run(
    unet: &UNet2DConditionModel,
    case: &str,
    frames: usize,
    camera: bool,
    trace: Option<&mut UNetTrace>,
) -> Tensor {
    let i = load("inputs.safetensors");
    let cam = camera.then(|| &i[&format!("{case}.camera")]);
    unet.forward_traced(
        &i[&format!("{case}.x")],
        &timesteps(&i[&format!("{case}.timesteps")]),
        &i[&format!("{case}.context")],
        Views {
            camera: cam,
            frames,
        },
        trace,
    )
    .unwrap()
}

#[test]
fn four_views_match_with_every_block_and_the_embedding() {
    let unet = model();
    let e = load("expected.safetensors");
    let i = load("inputs.safetensors");
    let cam = &i["mv4.camera"];
    let emb = unet
        .embedding(
            &timesteps(&i["mv4.timesteps"]),
            Views {
                camera: Some(cam),
                frames: 4,
            },
            DType::F32,
        )
        .unwrap();
    assert!(
        common::max_abs_diff(&emb, &e["mv4.emb"]) <= TOL,
        "time + camera embedding"
    );
    let features = Tensor::from_vec(
        unet.timestep_features(&timesteps(&i["mv4.timesteps"])),
        (4, 32),
        &Device::Cpu,
    )
    .unwrap();
    assert!(common::max_abs_diff(&features, &e["mv4.t_emb_sinusoidal"]) <= TOL);

    let mut trace = UNetTrace::default();
    let out = run(&unet, "mv4", 4, true, Some(&mut trace));
    assert_eq!(trace.input_blocks.len(), 6);
    for (k, t) in trace.input_blocks.iter().enumerate() {
        let err = common::max_abs_diff(t, &e[&format!("mv4.input_blocks.{k}")]);
        assert!(err <= TOL, "input_blocks.{k}: {err}");
    }
    assert!(
        common::max_abs_diff(trace.middle_block.as_ref().unwrap(), &e["mv4.middle_block"]) <= TOL
    );
    assert_eq!(trace.output_blocks.len(), 6);
    for (k, t) in trace.output_blocks.iter().enumerate() {
        let err = common::max_abs_diff(t, &e[&format!("mv4.output_blocks.{k}")]);
        assert!(err <= TOL, "output_blocks.{k}: {err}");
    }
    let err = common::max_abs_diff(&out, &e["mv4.out"]);
    eprintln!("mv4: max abs error {err:.2e}");
    assert!(err <= TOL, "mv4.out {err}");
}

#[test]
fn two_objects_and_plain_2d_mode_match() {
    let unet = model();
    let e = load("expected.safetensors");
    let err = common::max_abs_diff(&run(&unet, "mv8", 4, true, None), &e["mv8.out"]);
    eprintln!("mv8: max abs error {err:.2e}");
    assert!(err <= TOL, "mv8.out {err}");
    let err = common::max_abs_diff(&run(&unet, "sd2", 1, false, None), &e["sd2.out"]);
    eprintln!("sd2: max abs error {err:.2e}");
    assert!(err <= TOL, "sd2.out {err}");
}
