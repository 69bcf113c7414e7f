//! The DreamDistribution learner on the tiny fixture model: sequence layout, μ/σ and the
//! orthogonality loss against hand-computed values, finite-difference gradients of the whole
//! fit objective, gradients reaching only the soft prompts, and the loss going down.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use common::sd_tiny_files;
use dream3d::prompt::learner::{
    self, diffusion_loss, encode, gaussian, orthogonality_loss, reparameterize,
};
use dream3d::prompt::{Frame, PositionMode, Template};
use dream3d::stable_diffusion::StableDiffusion;
use dream3d::tokenizer::{BOS, EOS};

const DEV: Device = Device::Cpu;

fn model(dtype: DType) -> StableDiffusion {
    StableDiffusion::load(sd_tiny_files(), dtype, &DEV).unwrap()
}

use common::uniform as randn;

fn max_abs(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn gaussian_matches_hand_computation() {
    // Three prompts, one slot, two features: columns (1, 2, 6) and (0, 0, 3).
    let h = Tensor::new(&[[[1f64, 0.]], [[2., 0.]], [[6., 3.]]], &DEV).unwrap();
    let (mu, sigma) = gaussian(&h).unwrap();
    assert_eq!(mu.to_vec2::<f64>().unwrap(), [[3.0, 1.0]]);
    // Unbiased: ((4 + 1 + 9) / 2)^½ = √7 and ((1 + 1 + 4) / 2)^½ = √3.
    let s = sigma.to_vec2::<f64>().unwrap();
    assert!((s[0][0] - 7f64.sqrt()).abs() < 1e-12 && (s[0][1] - 3f64.sqrt()).abs() < 1e-12);
    assert!(gaussian(&h.i(0..1).unwrap()).is_err(), "K = 1 is refused");
}

#[test]
fn orthogonality_matches_hand_computation() {
    // cos² of the pairs: (e1, e2) = 0, (e1, e1+e2) = ½, (e2, e1+e2) = ½; 6 ordered pairs.
    let p = Tensor::new(&[[1f64, 0.], [0., 1.], [1., 1.]], &DEV).unwrap();
    let loss = orthogonality_loss(&p).unwrap().to_scalar::<f64>().unwrap();
    assert!((loss - 2.0 / 6.0).abs() < 1e-12, "{loss}");
    let same = Tensor::new(&[[1f64, 2.], [2., 4.]], &DEV).unwrap();
    assert!(
        (orthogonality_loss(&same)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            - 1.0)
            .abs()
            < 1e-12
    );
}

#[test]
fn frame_places_soft_tokens_and_positions() {
    let sd = model(DType::F64);
    let text = &sd.text_encoder;
    let soft = randn(&[2, 4, 8], 1, DType::F64);
    let tok = |ids: &[u32]| {
        text.embed_tokens(&Tensor::new(ids, &DEV).unwrap().unsqueeze(0).unwrap())
            .unwrap()
            .i(0)
            .unwrap()
    };
    let pos = text.position_embeddings(77).unwrap();

    let plain = Frame::new(
        text,
        &sd.tokenizer,
        &Template::default(),
        4,
        PositionMode::Once,
    )
    .unwrap();
    assert_eq!(plain.eos, 5);
    let seq = plain.fill(&soft).unwrap();
    assert_eq!(seq.dims(), [2, 77, 8]);
    assert!(max_abs(&(seq.i((.., 1..5)).unwrap() - &soft).unwrap()) == 0.0);
    assert!(max_abs(&(seq.i((0, 0)).unwrap() - tok(&[BOS]).i(0).unwrap()).unwrap()) == 0.0);
    assert!(max_abs(&(seq.i((1, 5)).unwrap() - tok(&[EOS]).i(0).unwrap()).unwrap()) == 0.0);

    // Official: a fixed token carries the position of its index in its own tokenisation
    // (BOS 0; the suffix side restarts at 1, so EOS at slot 5 carries position 1).
    let official = Frame::new(
        text,
        &sd.tokenizer,
        &Template::default(),
        4,
        PositionMode::Official,
    )
    .unwrap();
    let seq = official.fill(&soft).unwrap();
    let bos = (tok(&[BOS]).i(0).unwrap() + pos.i(0).unwrap()).unwrap();
    let eos = (tok(&[EOS]).i(0).unwrap() + pos.i(1).unwrap()).unwrap();
    assert!(max_abs(&(seq.i((0, 0)).unwrap() - bos).unwrap()) < 1e-12);
    assert!(max_abs(&(seq.i((0, 5)).unwrap() - eos).unwrap()) < 1e-12);

    let words = Template {
        prefix: "a photo of".into(),
        suffix: "made of gold".into(),
    };
    let edited = Frame::new(text, &sd.tokenizer, &words, 4, PositionMode::Official).unwrap();
    assert_eq!(edited.eos, 1 + 3 + 4 + 3);
    let too_long = Template {
        prefix: "word ".repeat(80),
        suffix: String::new(),
    };
    let err = Frame::new(text, &sd.tokenizer, &too_long, 4, PositionMode::Official)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("prompt too long"), "{err}");
}

/// Everything one fit step computes, for soft prompts `soft` (K × 4 × 8) and fixed randomness.
struct Step {
    sd: StableDiffusion,
    frame: Frame,
    x0: Tensor,
    noise: Tensor,
    eps: Tensor,
    t: Vec<usize>,
}

impl Step {
    fn new(dtype: DType, mode: PositionMode) -> Self {
        let sd = model(dtype);
        let frame = Frame::new(
            &sd.text_encoder,
            &sd.tokenizer,
            &Template::default(),
            4,
            mode,
        )
        .unwrap();
        Self {
            frame,
            x0: randn(&[2, 4, 16, 16], 11, dtype),
            noise: randn(&[2, 4, 16, 16], 12, dtype),
            eps: randn(&[2 * 3, 77, 8], 13, dtype),
            t: vec![700, 40],
            sd,
        }
    }

    fn loss(&self, soft: &Tensor) -> Tensor {
        let enc = encode(&self.sd.text_encoder, &self.frame, soft).unwrap();
        let (mu, sigma) = gaussian(&enc.hidden).unwrap();
        let cond = reparameterize(&mu, &sigma, &self.eps).unwrap();
        let diff = diffusion_loss(
            &self.sd.unet,
            &self.sd.schedule,
            &self.x0,
            &self.noise,
            &self.t,
            &cond,
            5.0,
        )
        .unwrap();
        (diff + (orthogonality_loss(&enc.pooled).unwrap() * 1e-3).unwrap()).unwrap()
    }
}

#[test]
fn fit_objective_gradient_matches_finite_differences() {
    for mode in [PositionMode::Official, PositionMode::Once] {
        let step = Step::new(DType::F64, mode);
        let soft0 = randn(&[3, 4, 8], 5, DType::F64).affine(0.05, 0.0).unwrap();
        let var = Var::from_tensor(&soft0).unwrap();
        let grads = step.loss(var.as_tensor()).backward().unwrap();
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert!(
            g.iter().all(|v| v.is_finite()),
            "gradient is finite even with σ = 0 at BOS"
        );
        let scale = g.iter().fold(0f64, |m, v| m.max(v.abs()));
        let flat = soft0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for i in [0, 9, 37, 70, 95] {
            let at = |d: f64| {
                let mut v = flat.clone();
                v[i] += d;
                step.loss(&Tensor::from_vec(v, (3, 4, 8), &DEV).unwrap())
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let fd = (at(1e-5) - at(-1e-5)) / 2e-5;
            assert!(
                (fd - g[i]).abs() <= 1e-6 * scale,
                "{mode:?} coordinate {i}: {} vs {fd}",
                g[i]
            );
        }
    }
}

#[test]
fn gradients_reach_only_the_soft_prompts_and_the_loss_decreases() {
    let step = Step::new(DType::F32, PositionMode::Official);
    let soft = learner::init_soft_prompts(3, 4, 8, 0, DType::F32, &DEV).unwrap();
    let mut opt = AdamW::new(
        vec![soft.clone()],
        ParamsAdamW {
            lr: 5e-2,
            weight_decay: 1e-2,
            ..Default::default()
        },
    )
    .unwrap();
    let first = step.loss(soft.as_tensor());
    let grads = first.backward().unwrap();
    assert!(grads.get(soft.as_tensor()).is_some());
    for (name, t) in step.sd.weight_tensors() {
        assert!(grads.get(&t).is_none(), "frozen {name} got a gradient");
    }
    let first = first.to_scalar::<f32>().unwrap();
    let mut last = first;
    for _ in 0..30 {
        let loss = step.loss(soft.as_tensor());
        let value = loss.to_scalar::<f32>().unwrap();
        assert!(value <= last * 1.01, "loss rose from {last} to {value}");
        last = value;
        opt.backward_step(&loss).unwrap();
    }
    // The random tiny UNet leaves a floor near 0.386; the prompts close most of the gap to it.
    assert!(last < 0.92 * first, "loss went from {first} to {last}");
}

#[test]
fn text_encoder_checkpointing_gives_the_same_gradient() {
    let sd = model(DType::F64);
    let frame = Frame::new(
        &sd.text_encoder,
        &sd.tokenizer,
        &Template::default(),
        4,
        PositionMode::Official,
    )
    .unwrap();
    let soft = Var::from_tensor(&randn(&[3, 4, 8], 5, DType::F64)).unwrap();
    let probe = randn(&[3, 77, 8], 6, DType::F64);
    let grad = |checkpointing: bool| {
        let enc = learner::encode_with(&sd.text_encoder, &frame, soft.as_tensor(), checkpointing)
            .unwrap();
        let loss = (enc.hidden * &probe).unwrap().sum_all().unwrap();
        loss.backward()
            .unwrap()
            .get(soft.as_tensor())
            .unwrap()
            .clone()
    };
    let diff = max_abs(&(grad(true) - grad(false)).unwrap());
    assert!(diff < 1e-12, "checkpointed gradient differs by {diff}");
}
