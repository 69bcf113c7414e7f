//! Fully connected layer with frozen weights.

use super::frozen::FrozenOp;
use crate::weights::Scope;
use candle_core::{Result as CResult, Tensor};

/// `y = x Wᵀ + b` over the last dimension (PyTorch `nn.Linear` layout: W is out × in).
#[derive(Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    pub fn load(scope: &Scope, in_dim: usize, out_dim: usize, bias: bool) -> crate::Result<Self> {
        let weight = scope.get("weight", &[out_dim, in_dim])?;
        let bias = if bias {
            Some(scope.get("bias", &[out_dim])?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let (w, b) = (self.weight.clone(), self.bias.clone());
        let forward = move |x: &Tensor| {
            let y = matmul_last(x, &w.t()?)?;
            match &b {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            }
        };
        let w = self.weight.clone();
        let backward = move |_: &Tensor, _: &Tensor, g: &Tensor| matmul_last(g, &w);
        let mut params = vec![&self.weight];
        params.extend(self.bias.as_ref());
        FrozenOp::new("frozen-linear", forward, backward).apply(x, &params)
    }
}

/// `x @ m` for `x` of any rank ≥ 2, as one 2-D matmul over the flattened leading dims.
fn matmul_last(x: &Tensor, m: &Tensor) -> CResult<Tensor> {
    let dims = x.dims();
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let y = x
        .contiguous()?
        .reshape((rows, dims[dims.len() - 1]))?
        .matmul(m)?;
    let mut out = dims.to_vec();
    *out.last_mut().unwrap() = m.dim(1)?;
    y.reshape(out)
}
