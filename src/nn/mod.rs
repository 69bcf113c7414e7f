//! Differentiable building blocks that candle lacks or gets wrong (see DESIGN.md, pitfalls):
//! frozen-weight layers whose backward yields only the input gradient, and normalisation and
//! softmax ops that stay attached to the gradient graph.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod frozen;
#[cfg(test)]
mod gradcheck;
mod im2col;
pub mod linear;
pub mod norm;
mod norm_kernel;

pub use activation::Activation;
pub use attention::{scaled_dot_product, softmax_last_dim, Attention};
pub use conv::Conv2d;
pub use frozen::FrozenOp;
pub use linear::Linear;
pub use norm::{GroupNorm, LayerNorm};

use candle_core::{Result as CResult, Tensor};

/// `x + shift` where `shift` is constant with respect to the gradient being taken (the ResNet
/// time embedding): candle would otherwise compute and keep an activation-sized gradient for it.
pub fn add_frozen(x: &Tensor, shift: &Tensor) -> CResult<Tensor> {
    let s = shift.clone();
    FrozenOp::new(
        "add-frozen",
        move |x: &Tensor| x.broadcast_add(&s),
        |_: &Tensor, _: &Tensor, g: &Tensor| Ok(g.clone()),
    )
    .apply(x, &[shift])
}
