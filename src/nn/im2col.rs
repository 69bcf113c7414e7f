//! CPU convolution as im2col + one large matrix product (and its adjoint, col2im, for the input
//! gradient). Candle's tiled CPU convolution re-packs the whole kernel on every call and
//! transposes the input on one thread; with the kernel's natural O×(I·k·k) layout, im2col in
//! (channel, ky, kx) row order needs no kernel copy at all, and the output comes out NCHW.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Geometry of a square-kernel convolution.
#[derive(Clone, Copy, Debug)]
pub struct ConvGeometry {
    pub batch: usize,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.padding - self.kernel) / self.stride + 1
    }

    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Rows of the column matrix: channels · k · k.
    pub fn rows(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }

    /// Columns: every output pixel of every image, batch-major.
    pub fn cols(&self) -> usize {
        self.batch * self.out_h() * self.out_w()
    }

    /// Input coordinate read by kernel tap `i` at output coordinate `o`, if inside the image.
    fn source(&self, o: usize, i: usize, size: usize) -> Option<usize> {
        (o * self.stride + i)
            .checked_sub(self.padding)
            .filter(|&v| v < size)
    }
}

/// B×C×H×W → (C·k·k) × (B·OH·OW).
pub struct Im2Col(pub ConvGeometry);

/// The adjoint of [`Im2Col`]: (C·k·k) × (B·OH·OW) → B×C×H×W, summing overlapping taps.
pub struct Col2Im(pub ConvGeometry);

fn contiguous<'a, T>(data: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("im2col/col2im need contiguous inputs"),
    }
}

fn im2col<T: Copy + Default + Send + Sync>(x: &[T], g: ConvGeometry) -> Vec<T> {
    let (oh, ow, k) = (g.out_h(), g.out_w(), g.kernel);
    let cols = g.cols();
    let mut out = vec![T::default(); g.rows() * cols];
    out.par_chunks_mut(cols).enumerate().for_each(|(row, dst)| {
        let (c, ky, kx) = (row / (k * k), (row / k) % k, row % k);
        for b in 0..g.batch {
            let plane = &x[(b * g.channels + c) * g.in_h * g.in_w..][..g.in_h * g.in_w];
            for oy in 0..oh {
                let line = &mut dst[(b * oh + oy) * ow..][..ow];
                let Some(iy) = g.source(oy, ky, g.in_h) else {
                    continue;
                };
                for (ox, v) in line.iter_mut().enumerate() {
                    if let Some(ix) = g.source(ox, kx, g.in_w) {
                        *v = plane[iy * g.in_w + ix];
                    }
                }
            }
        }
    });
    out
}

fn col2im<T: Copy + Default + Send + Sync + std::ops::AddAssign>(
    cols: &[T],
    g: ConvGeometry,
) -> Vec<T> {
    let (oh, ow, k) = (g.out_h(), g.out_w(), g.kernel);
    let n_cols = g.cols();
    let plane_len = g.in_h * g.in_w;
    let mut out = vec![T::default(); g.batch * g.channels * plane_len];
    // Planes are independent: each (image, channel) gathers its own k·k rows.
    out.par_chunks_mut(plane_len)
        .enumerate()
        .for_each(|(bc, plane)| {
            let (b, c) = (bc / g.channels, bc % g.channels);
            for ky in 0..k {
                for kx in 0..k {
                    let row = &cols[((c * k + ky) * k + kx) * n_cols..][..n_cols];
                    for oy in 0..oh {
                        let Some(iy) = g.source(oy, ky, g.in_h) else {
                            continue;
                        };
                        let line = &row[(b * oh + oy) * ow..][..ow];
                        for (ox, v) in line.iter().enumerate() {
                            if let Some(ix) = g.source(ox, kx, g.in_w) {
                                plane[iy * g.in_w + ix] += *v;
                            }
                        }
                    }
                }
            }
        });
    out
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(im2col(contiguous(x, l)?, g)),
            CpuStorage::F64(x) => CpuStorage::F64(im2col(contiguous(x, l)?, g)),
            _ => candle_core::bail!("im2col supports f32 and f64"),
        };
        Ok((out, Shape::from((g.rows(), g.cols()))))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(col2im(contiguous(x, l)?, g)),
            CpuStorage::F64(x) => CpuStorage::F64(col2im(contiguous(x, l)?, g)),
            _ => candle_core::bail!("col2im supports f32 and f64"),
        };
        Ok((out, Shape::from((g.batch, g.channels, g.in_h, g.in_w))))
    }
}

/// Whether the im2col path can run on `x`.
pub fn applicable(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

/// `conv2d(x, w)` for B×C×H×W `x` and O×C×k×k `w` (untracked tensors), one image at a time
/// so that the column buffer stays k·k times one image, not the batch.
pub fn conv2d(x: &Tensor, w: &Tensor, g: ConvGeometry) -> Result<Tensor> {
    let out_ch = w.dim(0)?;
    let w = w.reshape((out_ch, g.rows()))?;
    let one = ConvGeometry { batch: 1, ..g };
    let images = (0..g.batch)
        .map(|b| {
            let cols = x
                .narrow(0, b, 1)?
                .contiguous()?
                .apply_op1_no_bwd(&Im2Col(one))?;
            w.matmul(&cols)?.reshape((1, out_ch, g.out_h(), g.out_w()))
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&images, 0)
}

/// dL/dx of [`conv2d`] given dL/dy (B×O×OH×OW): col2im(wᵀ · dy), per image.
pub fn conv2d_input_grad(grad: &Tensor, w: &Tensor, g: ConvGeometry) -> Result<Tensor> {
    let out_ch = w.dim(0)?;
    let wt = w.reshape((out_ch, g.rows()))?.t()?;
    let one = ConvGeometry { batch: 1, ..g };
    let images = (0..g.batch)
        .map(|b| {
            let dy = grad
                .narrow(0, b, 1)?
                .contiguous()?
                .reshape((out_ch, one.cols()))?;
            wt.matmul(&dy)?.apply_op1_no_bwd(&Col2Im(one))
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&images, 0)
}
