//! Rendered views to diffusion latents, differentiably: bilinear resize to the model's size
//! (PyTorch's `align_corners=False`, as two matrix products so the gradient comes for free),
//! [0, 1] → [−1, 1], and a sample of the VAE encoder's posterior × its scaling factor.

use crate::models::AutoencoderKL;
use candle_core::{Device, Result as CResult, Tensor};

/// Stable Diffusion's latent scaling factor.
pub const LATENT_SCALE: f64 = 0.18215;

/// The `to × from` matrix of 1-D bilinear interpolation with `align_corners=False`.
pub fn resize_matrix(to: usize, from: usize) -> Vec<f64> {
    let mut m = vec![0.0; to * from];
    let scale = from as f64 / to as f64;
    for i in 0..to {
        let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(from - 1);
        let i1 = (i0 + 1).min(from - 1);
        let w1 = src - i0 as f64;
        m[i * from + i0] += 1.0 - w1;
        m[i * from + i1] += w1;
    }
    m
}

/// Resizes B × C × H × W images to `size`² (identity when already that size).
pub fn resize(images: &Tensor, size: usize) -> CResult<Tensor> {
    let (_, _, h, w) = images.dims4()?;
    if (h, w) == (size, size) {
        return Ok(images.clone());
    }
    let matrix = |to: usize, from: usize, device: &Device| {
        Tensor::from_vec(resize_matrix(to, from), (to, from), device)?.to_dtype(images.dtype())
    };
    let rows = matrix(size, h, images.device())?;
    let cols = matrix(size, w, images.device())?.t()?;
    rows.broadcast_matmul(images)?.broadcast_matmul(&cols)
}

/// The VAE encoder at the diffusion model's image size.
pub struct LatentEncoder<'a> {
    pub vae: &'a AutoencoderKL,
    /// Square image size the model expects (256 for MVDream).
    pub size: usize,
}

impl LatentEncoder<'_> {
    /// Latents (B × z × size/8 × size/8) of RGB views in [0, 1] (B × 3 × H × W), with
    /// `noise` drawing the posterior sample; differentiable in the views.
    pub fn encode(&self, views: &Tensor, noise: &Tensor) -> CResult<Tensor> {
        let images = resize(views, self.size)?.affine(2.0, -1.0)?;
        self.vae.encode(&images)?.sample(noise)? * LATENT_SCALE
    }

    pub fn vae_device(&self) -> Device {
        self.vae.device().clone()
    }

    pub fn vae_dtype(&self) -> candle_core::DType {
        self.vae.dtype()
    }

    /// Latent shape (z, h, w) for one view.
    pub fn latent_shape(&self) -> (usize, usize, usize) {
        let side = self.size / self.vae.config.downscale();
        (self.vae.config.latent_channels, side, side)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizing_matches_candles_bilinear_kernel() {
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 5.0 * 7.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 5, 7))
            .unwrap()
            .sin()
            .unwrap();
        for size in [4, 16, 20] {
            let ours = resize(&x, size).unwrap();
            let theirs = x.upsample_bilinear2d(size, size, false).unwrap();
            let diff = (ours - theirs)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "size {size}: {diff}");
        }
        // Rows of the matrix are convex weights.
        let m = resize_matrix(256, 64);
        for row in m.chunks(64) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }
}
