//! Gradients of the full differentiable paths on the tiny fixture model, in f64, against
//! central finite differences:
//! - soft-token embeddings → CLIP text encoder → UNet → loss (what `fit` trains through);
//! - image → VAE encoder → latents (what score distillation back-propagates through).
//!
//! The directional-derivative checks cover every coordinate at once, so an op that silently
//! detaches its output (candle's fused LayerNorm/softmax) anywhere on the path fails them.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::sd_tiny_files;
use dream3d::models::{
    AutoencoderKL, ClipTextConfig, ClipTextModel, UNet2DConditionModel, UNetConfig, VaeConfig,
};
use dream3d::tokenizer::{BOS, EOS};
use dream3d::weights::Weights;

const DEV: Device = Device::Cpu;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    common::uniform(shape, seed, DType::F64)
}

struct TextToUNet {
    text: ClipTextModel,
    unet: UNet2DConditionModel,
    weights: Vec<Weights>,
    /// Token embeddings of `[BOS] _ _ _ _ [EOS] pad…` with the four soft slots zero.
    frame: Tensor,
    latents: Tensor,
}

const SOFT: usize = 4;

impl TextToUNet {
    fn load() -> Self {
        let files = sd_tiny_files();
        let tw = Weights::load(&files.text_encoder.weights, DType::F64, &DEV).unwrap();
        let config = ClipTextConfig::load(&files.text_encoder.config).unwrap();
        let text = ClipTextModel::load(config, &files.text_encoder.config, &tw).unwrap();
        let uw = Weights::load(&files.unet.weights, DType::F64, &DEV).unwrap();
        let (config, layout) = UNetConfig::load(&files.unet.config).unwrap();
        let unet = UNet2DConditionModel::load(config, layout, &uw).unwrap();
        let mut ids = vec![BOS, 0, 0, 0, 0, EOS];
        ids.resize(77, 0);
        let ids = Tensor::new(ids, &DEV).unwrap().unsqueeze(0).unwrap();
        let mask: Vec<f64> = (0..77)
            .map(|i| if (1..=SOFT).contains(&i) { 0.0 } else { 1.0 })
            .collect();
        let mask = Tensor::from_vec(mask, (1, 77, 1), &DEV).unwrap();
        let frame = text
            .embed_tokens(&ids)
            .unwrap()
            .broadcast_mul(&mask)
            .unwrap();
        Self {
            text,
            unet,
            weights: vec![tw, uw],
            frame,
            latents: randn(&[1, 4, 16, 16], 7),
        }
    }

    /// Squared UNet output for soft token embeddings `soft` (1 × SOFT × D) spliced in.
    fn loss(&self, soft: &Tensor) -> Tensor {
        let d = soft.dim(2).unwrap();
        let placed = soft.pad_with_zeros(1, 1, 77 - 1 - SOFT).unwrap();
        let embeds = (&self.frame + placed).unwrap();
        let hidden = self.text.forward_embeds(&embeds).unwrap();
        assert_eq!(hidden.dims(), [1, 77, d]);
        let out = self.unet.forward(&self.latents, &[500.0], &hidden).unwrap();
        out.sqr().unwrap().mean_all().unwrap()
    }
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

/// Central difference of `f` at `x` along `dir`.
fn directional_fd(f: impl Fn(&Tensor) -> f64, x: &Tensor, dir: &Tensor, eps: f64) -> f64 {
    let plus = f(&(x + (dir * eps).unwrap()).unwrap());
    let minus = f(&(x - (dir * eps).unwrap()).unwrap());
    (plus - minus) / (2.0 * eps)
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    scalar(&(a * b).unwrap().sum_all().unwrap())
}

/// Autograd vs finite differences on single coordinates and along random directions.
fn check_gradient(f: impl Fn(&Tensor) -> Tensor, x0: &Tensor, coords: &[usize]) {
    let var = Var::from_tensor(x0).unwrap();
    let grads = f(var.as_tensor()).backward().unwrap();
    let grad = grads
        .get(var.as_tensor())
        .expect("input has a gradient")
        .clone();
    let g = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let scale = g.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "gradient is identically zero");
    let loss = |x: &Tensor| scalar(&f(x));
    for &i in coords {
        let mut e = vec![0f64; g.len()];
        e[i] = 1.0;
        let dir = Tensor::from_vec(e, x0.dims(), &DEV).unwrap();
        let fd = directional_fd(loss, x0, &dir, 1e-4);
        assert!(
            (fd - g[i]).abs() <= 1e-6 * scale,
            "coordinate {i}: autograd {} vs finite difference {fd}",
            g[i]
        );
    }
    for seed in 0..3 {
        let dir = randn(x0.dims(), 100 + seed);
        let fd = directional_fd(loss, x0, &dir, 1e-4);
        let auto = dot(&grad, &dir);
        assert!(
            (fd - auto).abs() <= 1e-6 * auto.abs().max(fd.abs()),
            "direction {seed}: autograd {auto} vs finite difference {fd}"
        );
    }
}

#[test]
fn soft_prompt_through_clip_and_unet_matches_finite_differences() {
    let m = TextToUNet::load();
    let soft = (randn(&[1, SOFT, 8], 3) * 0.5).unwrap();
    check_gradient(|s| m.loss(s), &soft, &[0, 5, 13, 22, 31]);
}

#[test]
fn image_through_vae_encoder_matches_finite_differences() {
    let files = sd_tiny_files();
    let w = Weights::load(&files.vae.weights, DType::F64, &DEV).unwrap();
    let vae = AutoencoderKL::load(VaeConfig::load(&files.vae.config).unwrap(), &w).unwrap();
    let probe = randn(&[1, 4, 16, 16], 9);
    let loss = |img: &Tensor| {
        let dist = vae.encode(img).unwrap();
        (dist.mean * &probe).unwrap().sum_all().unwrap()
    };
    let image = randn(&[1, 3, 32, 32], 4);
    check_gradient(loss, &image, &[0, 777, 1500, 3071]);
}

#[test]
fn frozen_weights_get_no_gradient() {
    let m = TextToUNet::load();
    let soft = Var::from_tensor(&(randn(&[1, SOFT, 8], 3) * 0.5).unwrap()).unwrap();
    let grads = m.loss(soft.as_tensor()).backward().unwrap();
    assert!(grads.get(soft.as_tensor()).is_some());
    let mut checked = 0;
    for w in &m.weights {
        for (name, t) in w.tensors() {
            assert!(
                grads.get(&t).is_none(),
                "frozen weight {name} got a gradient"
            );
            checked += 1;
        }
    }
    assert!(checked > 200, "all weights of both models were checked");
}

/// The guard works: the same directional check on candle's fused layer norm (which detaches
/// its output) reports a mismatch, so a regression to it could not pass the tests above.
#[test]
fn directional_check_detects_a_detaching_op() {
    // The fused kernel has no f64 version: run in f32 and compare in f64.
    let w = Tensor::ones(6, DType::F32, &DEV).unwrap();
    let b = Tensor::zeros(6, DType::F32, &DEV).unwrap();
    let f = |x: &Tensor| {
        let x = x.to_dtype(DType::F32).unwrap();
        let fused = candle_nn::ops::layer_norm(&x.exp().unwrap(), &w, &b, 1e-5).unwrap();
        (fused * x)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    };
    let x0 = randn(&[3, 6], 1);
    let var = Var::from_tensor(&x0).unwrap();
    let grad = f(var.as_tensor())
        .backward()
        .unwrap()
        .get(var.as_tensor())
        .unwrap()
        .clone();
    let dir = randn(&[3, 6], 2);
    let fd = directional_fd(|x| scalar(&f(x)), &x0, &dir, 1e-2);
    let auto = dot(&grad, &dir);
    assert!(
        (fd - auto).abs() > 1e-3 * fd.abs(),
        "fused layer norm unexpectedly kept its gradient: {auto} vs {fd}"
    );
}
