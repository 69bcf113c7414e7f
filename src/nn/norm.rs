//! Group and layer normalisation with a closed-form input gradient.
//!
//! Candle's fused `LayerNorm` silently detaches its output from the graph; these run the same
//! maths as plain ops and, when the affine parameters are frozen, back-propagate with the
//! textbook formula (storing only the input rather than every intermediate).

use super::frozen::FrozenOp;
use super::norm_kernel::{self, FusedNorm, NormShape};
use crate::weights::Scope;
use candle_core::{Result as CResult, Tensor, D};

/// Normalises rows of `x` (… × n) and returns `(x̂, 1/σ)`.
fn standardise(x: &Tensor, eps: f64) -> CResult<(Tensor, Tensor)> {
    let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let inv_std = (centred.sqr()?.mean_keepdim(D::Minus1)? + eps)?
        .sqrt()?
        .recip()?;
    Ok((centred.broadcast_mul(&inv_std)?, inv_std))
}

/// dL/dx of `x̂ = standardise(x)` over the last dim, given dL/dx̂.
fn standardise_backward(x: &Tensor, g_hat: &Tensor, eps: f64) -> CResult<Tensor> {
    let (x_hat, inv_std) = standardise(x, eps)?;
    let mean_g = g_hat.mean_keepdim(D::Minus1)?;
    let mean_gx = (g_hat * &x_hat)?.mean_keepdim(D::Minus1)?;
    g_hat
        .broadcast_sub(&mean_g)?
        .sub(&x_hat.broadcast_mul(&mean_gx)?)?
        .broadcast_mul(&inv_std)
}

/// `torch.nn.GroupNorm` on N × C × … inputs.
#[derive(Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn load(scope: &Scope, groups: usize, channels: usize, eps: f64) -> crate::Result<Self> {
        if groups == 0 || channels % groups != 0 {
            return Err(crate::Error::Input(format!(
                "{channels} channels cannot be split into {groups} groups"
            )));
        }
        Ok(Self {
            weight: scope.get("weight", &[channels])?,
            bias: scope.get("bias", &[channels])?,
            groups,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let dims = x.dims().to_vec();
        let c = dims[1];
        let g = self.groups;
        if norm_kernel::applicable(x, &[&self.weight, &self.bias]) {
            let shape = NormShape {
                channels_per_group: c / g,
                spatial: dims[2..].iter().product(),
                groups: g,
                eps: self.eps,
            };
            return fused(x, &self.weight, &self.bias, shape);
        }
        self.forward_composite(x)
    }

    /// Tensor-op version for devices and dtypes without the fused kernel.
    pub(crate) fn forward_composite(&self, x: &Tensor) -> CResult<Tensor> {
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let g = self.groups;
        let channel_shape = (1, c, 1);
        let w = self.weight.reshape(channel_shape)?;
        let bias = self.bias.reshape(channel_shape)?;
        let eps = self.eps;
        let shape = dims.clone();
        let forward = move |x: &Tensor| {
            let (x_hat, _) = standardise(&x.reshape((b, g, ()))?, eps)?;
            x_hat
                .reshape((b, c, ()))?
                .broadcast_mul(&w)?
                .broadcast_add(&bias)?
                .reshape(shape.clone())
        };
        let w = self.weight.reshape(channel_shape)?;
        let backward = move |x: &Tensor, _: &Tensor, grad: &Tensor| {
            let g_hat = grad.reshape((b, c, ()))?.broadcast_mul(&w)?;
            standardise_backward(&x.reshape((b, g, ()))?, &g_hat.reshape((b, g, ()))?, eps)?
                .reshape(dims.clone())
        };
        FrozenOp::new("group-norm", forward, backward).apply(x, &[&self.weight, &self.bias])
    }
}

/// `torch.nn.LayerNorm` over the last dimension.
#[derive(Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(scope: &Scope, dim: usize, eps: f64) -> crate::Result<Self> {
        Ok(Self {
            weight: scope.get("weight", &[dim])?,
            bias: scope.get("bias", &[dim])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        if norm_kernel::applicable(x, &[&self.weight, &self.bias]) {
            let shape = NormShape {
                channels_per_group: self.weight.dim(0)?,
                spatial: 1,
                groups: 1,
                eps: self.eps,
            };
            return fused(x, &self.weight, &self.bias, shape);
        }
        self.forward_composite(x)
    }

    /// Tensor-op version for devices and dtypes without the fused kernel.
    pub(crate) fn forward_composite(&self, x: &Tensor) -> CResult<Tensor> {
        let (w, b, eps) = (self.weight.clone(), self.bias.clone(), self.eps);
        let forward = move |x: &Tensor| standardise(x, eps)?.0.broadcast_mul(&w)?.broadcast_add(&b);
        let w = self.weight.clone();
        let backward = move |x: &Tensor, _: &Tensor, g: &Tensor| {
            standardise_backward(x, &g.broadcast_mul(&w)?, eps)
        };
        FrozenOp::new("layer-norm", forward, backward).apply(x, &[&self.weight, &self.bias])
    }
}

fn fused(x: &Tensor, weight: &Tensor, bias: &Tensor, shape: NormShape) -> CResult<Tensor> {
    x.contiguous()?.apply_op1(FusedNorm {
        weight: weight.clone(),
        bias: bias.clone(),
        shape,
    })
}
