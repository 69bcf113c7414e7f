//! Finite-difference gradient checks of every op in this module (f64, central differences).

use super::*;
use crate::weights::Weights;
use candle_core::{Device, Tensor, Var};
use std::collections::BTreeMap;
use std::path::Path;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn weights(tensors: &[(&str, Tensor)]) -> Weights {
    let map: BTreeMap<String, Tensor> = tensors
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    Weights::from_tensors(Path::new("test"), map)
}

/// Checks d/dx of `sum(f(x) ⊙ w)` (w fixed and random) against central differences.
fn check(shape: &[usize], f: impl Fn(&Tensor) -> Tensor) {
    let x0 = randn(shape, 1);
    let probe_shape = f(&x0).dims().to_vec();
    let w = randn(&probe_shape, 2);
    let loss = |x: &Tensor| f(x).mul(&w).unwrap().sum_all().unwrap();
    let var = Var::from_tensor(&x0).unwrap();
    let grads = loss(var.as_tensor()).backward().unwrap();
    let auto = grads
        .get(var.as_tensor())
        .expect("input gets a gradient")
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let flat = x0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let eps = 1e-5;
    for i in (0..flat.len()).step_by((flat.len() / 13).max(1)) {
        let at = |delta: f64| {
            let mut v = flat.clone();
            v[i] += delta;
            let x = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
            loss(&x).to_scalar::<f64>().unwrap()
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!(
            (fd - auto[i]).abs() <= 1e-6 * (1.0 + fd.abs()),
            "coordinate {i}: autograd {} vs finite difference {fd}",
            auto[i]
        );
    }
}

/// Gradients of Σ conv(x)².
fn squared_sum_grads(conv: &conv::Conv2d, x: &Var) -> candle_core::backprop::GradStore {
    let y = conv.forward(x.as_tensor()).unwrap();
    y.sqr().unwrap().sum_all().unwrap().backward().unwrap()
}

#[test]
fn linear() {
    let w = weights(&[("weight", randn(&[5, 3], 3)), ("bias", randn(&[5], 4))]);
    let l = Linear::load(&w.root(), 3, 5, true).unwrap();
    check(&[2, 4, 3], |x| {
        l.forward(&x.transpose(0, 1).unwrap()).unwrap()
    });
}

#[test]
fn conv_stride_1_and_2_on_odd_even_input() {
    let w = weights(&[
        ("weight", randn(&[4, 3, 3, 3], 3)),
        ("bias", randn(&[4], 4)),
    ]);
    for stride in [1, 2] {
        let conv = conv::Conv2d::load(&w.root(), 3, 4, 3, stride, 1).unwrap();
        for use_im2col in [true, false] {
            check(&[2, 3, 7, 6], |x| conv.forward_with(x, use_im2col).unwrap());
        }
        let x = randn(&[2, 3, 7, 6], 9);
        let ours = conv.forward_with(&x, true).unwrap();
        let candle = conv.forward_with(&x, false).unwrap();
        let diff = (ours - candle).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-12);
    }
    let pointwise = weights(&[
        ("weight", randn(&[4, 3, 1, 1], 3)),
        ("bias", randn(&[4], 4)),
    ]);
    let conv = conv::Conv2d::load(&pointwise.root(), 3, 4, 1, 1, 0).unwrap();
    check(&[2, 3, 5, 4], |x| conv.forward(x).unwrap());
}

#[test]
fn group_and_layer_norm() {
    let w = weights(&[("weight", randn(&[6], 3)), ("bias", randn(&[6], 4))]);
    let gn = GroupNorm::load(&w.root(), 3, 6, 1e-6).unwrap();
    check(&[2, 6, 3, 2], |x| gn.forward(x).unwrap());
    check(&[2, 6, 3, 2], |x| gn.forward_composite(x).unwrap());
    let ln = LayerNorm::load(&w.root(), 6, 1e-5).unwrap();
    check(&[2, 5, 6], |x| ln.forward(x).unwrap());
    check(&[2, 5, 6], |x| ln.forward_composite(x).unwrap());
    // The fused kernel and the tensor-op version agree.
    let x = randn(&[2, 6, 3, 2], 9);
    let diff = (gn.forward(&x).unwrap() - gn.forward_composite(&x).unwrap()).unwrap();
    assert!(
        diff.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            < 1e-12
    );
    let x = randn(&[2, 5, 6], 9);
    let diff = (ln.forward(&x).unwrap() - ln.forward_composite(&x).unwrap()).unwrap();
    assert!(
        diff.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            < 1e-12
    );
}

#[test]
fn softmax_with_mask_and_attention() {
    let mask =
        Tensor::from_vec(vec![0.0, f64::NEG_INFINITY, 0.0, 0.0], (2, 2), &Device::Cpu).unwrap();
    check(&[3, 2, 2], |x| softmax_last_dim(x, Some(&mask)).unwrap());
    check(&[2, 3, 4], |x| {
        scaled_dot_product(x, &x.affine(0.5, 0.1).unwrap(), x, 2, None).unwrap()
    });
}

#[test]
fn frozen_add_and_activations() {
    let shift = randn(&[1, 3, 1, 1], 5);
    check(&[2, 3, 2, 2], |x| add_frozen(x, &shift).unwrap());
    for act in [Activation::Gelu, Activation::QuickGelu, Activation::Silu] {
        check(&[4, 5], |x| act.forward(x).unwrap());
    }
}

#[test]
fn frozen_layers_keep_no_weight_gradient() {
    let w = weights(&[
        ("weight", randn(&[4, 3, 3, 3], 3)),
        ("bias", randn(&[4], 4)),
    ]);
    let conv = conv::Conv2d::load(&w.root(), 3, 4, 3, 1, 1).unwrap();
    let x = Var::from_tensor(&randn(&[1, 3, 5, 5], 1)).unwrap();
    let grads = squared_sum_grads(&conv, &x);
    assert!(grads.get(x.as_tensor()).is_some());
    for (name, t) in w.tensors() {
        assert!(grads.get(&t).is_none(), "{name} got a gradient");
    }
    assert_eq!(
        grads.get_ids().count(),
        1,
        "only the input's gradient is stored"
    );
}

#[test]
fn trainable_conv_weights_get_their_gradient() {
    let weight = Var::from_tensor(&randn(&[4, 3, 3, 3], 3)).unwrap();
    let w = weights(&[("bias", randn(&[4], 4))]);
    let conv = conv::Conv2d::new(
        weight.as_tensor().clone(),
        Some(w.root().get("bias", &[4]).unwrap()),
        1,
        1,
    );
    let x = Var::from_tensor(&randn(&[1, 3, 5, 5], 1)).unwrap();
    let grads = squared_sum_grads(&conv, &x);
    assert!(grads.get(weight.as_tensor()).is_some(), "weight gradient");
    assert!(grads.get(x.as_tensor()).is_some(), "input gradient");
}

#[test]
fn trainable_weights_fall_back_to_tracked_ops() {
    let weight = Var::from_tensor(&randn(&[5, 3], 3)).unwrap();
    let l = Linear::new(weight.as_tensor().clone(), None);
    let x = randn(&[2, 3], 1);
    let grads = l
        .forward(&x)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = grads
        .get(weight.as_tensor())
        .expect("a trainable weight gets its gradient");
    let expected = x.sum_keepdim(0).unwrap().broadcast_as((5, 3)).unwrap();
    assert!(
        (g - expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            < 1e-12
    );
}
