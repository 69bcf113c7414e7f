//! 2-D convolution with frozen weights.

use super::frozen::FrozenOp;
use super::im2col::{self, ConvGeometry};
use crate::weights::Scope;
use candle_core::{Result as CResult, Tensor};

/// PyTorch `nn.Conv2d` (groups 1, dilation 1); weight out × in × k × k.
#[derive(Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn new(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize) -> Self {
        Self {
            weight,
            bias,
            stride,
            padding,
        }
    }

    pub fn load(
        scope: &Scope,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> crate::Result<Self> {
        Ok(Self {
            weight: scope.get("weight", &[out_ch, in_ch, kernel, kernel])?,
            bias: Some(scope.get("bias", &[out_ch])?),
            stride,
            padding,
        })
    }

    pub fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        // Our kernels differentiate only to the input: trainable weights take candle's conv.
        let frozen = !self.weight.track_op() && !self.bias.as_ref().is_some_and(Tensor::track_op);
        self.forward_with(x, frozen && im2col::applicable(x))
    }

    /// `use_im2col` picks our CPU kernels over candle's convolution (which other devices and
    /// dtypes use); tests run both.
    pub(crate) fn forward_with(&self, x: &Tensor, use_im2col: bool) -> CResult<Tensor> {
        let (w, b, stride, padding) = (
            self.weight.clone(),
            self.bias.clone(),
            self.stride,
            self.padding,
        );
        let geometry = move |x: &Tensor, w: &Tensor| -> CResult<ConvGeometry> {
            let (batch, channels, in_h, in_w) = x.dims4()?;
            Ok(ConvGeometry {
                batch,
                channels,
                in_h,
                in_w,
                kernel: w.dim(2)?,
                stride,
                padding,
            })
        };
        let forward = move |x: &Tensor| {
            let y = if use_im2col {
                im2col::conv2d(x, &w, geometry(x, &w)?)?
            } else {
                x.conv2d(&w, padding, stride, 1, 1)?
            };
            match &b {
                Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
                None => Ok(y),
            }
        };
        let w = self.weight.clone();
        let backward = move |x: &Tensor, _: &Tensor, g: &Tensor| {
            if use_im2col {
                im2col::conv2d_input_grad(g, &w, geometry(x, &w)?)
            } else {
                input_gradient(x.dims4()?, g, &w, stride, padding)
            }
        };
        let mut params = vec![&self.weight];
        params.extend(self.bias.as_ref());
        FrozenOp::new("frozen-conv2d", forward, backward).apply(x, &params)
    }
}

/// dL/dx of a convolution, given dL/dy.
fn input_gradient(
    (_, _, in_h, in_w): (usize, usize, usize, usize),
    g: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
) -> CResult<Tensor> {
    let k = w.dim(2)?;
    if stride == 1 && padding < k {
        // A stride-1 transposed convolution is a plain convolution with the flipped, transposed
        // kernel; candle's CPU conv2d is ~3x faster than its conv_transpose2d.
        let flipped = w.flip(&[2, 3])?.transpose(0, 1)?.contiguous()?;
        return g.contiguous()?.conv2d(&flipped, k - 1 - padding, 1, 1, 1);
    }
    // The transposed convolution covers the input exactly once output padding restores the
    // rows/columns that the strided forward dropped; H and W may need different amounts, so
    // use the larger and crop.
    let (_, _, out_h, out_w) = g.dims4()?;
    let base = |o: usize| (o - 1) * stride + k - 2 * padding;
    let extra = (in_h - base(out_h)).max(in_w - base(out_w));
    g.contiguous()?
        .conv_transpose2d(w, padding, extra, stride, 1)?
        .narrow(2, 0, in_h)?
        .narrow(3, 0, in_w)
}
