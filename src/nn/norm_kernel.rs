//! Fused CPU kernels for group/layer normalisation: one pass for the statistics and one for the
//! output, in place of the dozen allocating tensor ops of the composite version (which remains
//! the path for other devices and dtypes).
//!
//! Layout: `x` is `rows × channels × spatial`, contiguous; the statistics are taken over
//! consecutive runs of `channels_per_group × spatial` elements and the affine parameters are
//! per channel. GroupNorm on N×C×H×W: rows = N·G, channels = C/G per group, spatial = H·W.
//! LayerNorm over D: rows = all leading elements, one group of D channels, spatial = 1.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct NormShape {
    /// Channels in each normalised group.
    pub channels_per_group: usize,
    /// Elements per channel (H·W, or 1 for layer norm).
    pub spatial: usize,
    /// Groups per affine cycle (G for group norm, 1 for layer norm).
    pub groups: usize,
    pub eps: f64,
}

impl NormShape {
    fn group_len(&self) -> usize {
        self.channels_per_group * self.spatial
    }

    /// The channel of element `i` within group number `group`.
    fn channel(&self, group: usize, i: usize) -> usize {
        (group % self.groups) * self.channels_per_group + i / self.spatial
    }
}

trait Float: Copy + Send + Sync + 'static {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

impl Float for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Float for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// Mean and 1/σ of one group (two-pass, accumulated in f64).
fn stats<T: Float>(x: &[T], eps: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = x.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

fn forward<T: Float>(x: &[T], w: &[T], b: &[T], s: NormShape) -> Vec<T> {
    let len = s.group_len();
    let mut out = vec![T::from_f64(0.0); x.len()];
    out.par_chunks_mut(len)
        .zip(x.par_chunks(len))
        .enumerate()
        .for_each(|(g, (out, x))| {
            let (mean, inv) = stats(x, s.eps);
            for (i, (o, v)) in out.iter_mut().zip(x).enumerate() {
                let c = s.channel(g, i);
                *o = T::from_f64((v.to_f64() - mean) * inv * w[c].to_f64() + b[c].to_f64());
            }
        });
    out
}

/// dL/dx = (ĝ − mean ĝ − x̂·mean(ĝ x̂)) / σ with ĝ = dL/dy · w.
fn backward<T: Float>(x: &[T], grad: &[T], w: &[T], s: NormShape) -> Vec<T> {
    let len = s.group_len();
    let mut out = vec![T::from_f64(0.0); x.len()];
    out.par_chunks_mut(len)
        .zip(x.par_chunks(len).zip(grad.par_chunks(len)))
        .enumerate()
        .for_each(|(g, (out, (x, grad)))| {
            let (mean, inv) = stats(x, s.eps);
            let n = len as f64;
            let (mut sum_g, mut sum_gx) = (0f64, 0f64);
            for (i, (v, d)) in x.iter().zip(grad).enumerate() {
                let gh = d.to_f64() * w[s.channel(g, i)].to_f64();
                sum_g += gh;
                sum_gx += gh * (v.to_f64() - mean) * inv;
            }
            let (mean_g, mean_gx) = (sum_g / n, sum_gx / n);
            for (i, (o, (v, d))) in out.iter_mut().zip(x.iter().zip(grad)).enumerate() {
                let gh = d.to_f64() * w[s.channel(g, i)].to_f64();
                let x_hat = (v.to_f64() - mean) * inv;
                *o = T::from_f64((gh - mean_g - x_hat * mean_gx) * inv);
            }
        });
    out
}

/// The elements a contiguous layout covers.
fn slice<'a, T>(data: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("fused norm needs a contiguous input"),
    }
}

/// Forward op: normalise, scale, shift. Backward: the closed form above (weights stay frozen).
pub struct FusedNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub shape: NormShape,
}

impl CustomOp1 for FusedNorm {
    fn name(&self) -> &'static str {
        "fused-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (w, b) = (&self.weight, &self.bias);
        let out = match storage {
            CpuStorage::F32(x) => CpuStorage::F32(forward(
                slice(x, layout)?,
                &w.to_vec1::<f32>()?,
                &b.to_vec1::<f32>()?,
                self.shape,
            )),
            CpuStorage::F64(x) => CpuStorage::F64(forward(
                slice(x, layout)?,
                &w.to_vec1::<f64>()?,
                &b.to_vec1::<f64>()?,
                self.shape,
            )),
            _ => candle_core::bail!("fused norm supports f32 and f64"),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let backward = FusedNormBackward {
            weight: self.weight.clone(),
            shape: self.shape,
        };
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &backward)?))
    }
}

/// `(x, dL/dy) → dL/dx` of [`FusedNorm`].
struct FusedNormBackward {
    weight: Tensor,
    shape: NormShape,
}

impl CustomOp2 for FusedNormBackward {
    fn name(&self) -> &'static str {
        "fused-norm-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        g: &CpuStorage,
        g_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let w = &self.weight;
        let out = match (x, g) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => CpuStorage::F32(backward(
                slice(x, x_layout)?,
                slice(g, g_layout)?,
                &w.to_vec1::<f32>()?,
                self.shape,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => CpuStorage::F64(backward(
                slice(x, x_layout)?,
                slice(g, g_layout)?,
                &w.to_vec1::<f64>()?,
                self.shape,
            )),
            _ => candle_core::bail!("fused norm backward supports f32 and f64"),
        };
        Ok((out, x_layout.shape().clone()))
    }
}

/// Whether the fused kernel can run: CPU, f32/f64, frozen parameters.
pub fn applicable(x: &Tensor, params: &[&Tensor]) -> bool {
    x.device().is_cpu()
        && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
        && params
            .iter()
            .all(|p| !p.track_op() && p.dtype() == x.dtype())
}
