//! Convolutional blocks shared by the UNet and the VAE (diffusers `resnet.py`, `downsampling.py`,
//! `upsampling.py`).

use crate::error::Result;
use crate::nn::{add_frozen, Conv2d, GroupNorm, Linear};
use crate::weights::Scope;
use candle_core::{Result as CResult, Tensor};

/// Sizes of one `ResnetBlock2D`.
pub struct ResnetSpec {
    pub in_ch: usize,
    pub out_ch: usize,
    /// Width of the time embedding, `None` in the VAE.
    pub temb_ch: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    pub output_scale: f64,
}

/// `norm → SiLU → conv → (+ time) → norm → SiLU → conv`, plus the (1×1-projected) input.
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    output_scale: f64,
}

impl ResnetBlock2D {
    pub fn load(s: &Scope, spec: &ResnetSpec) -> Result<Self> {
        let (i, o) = (spec.in_ch, spec.out_ch);
        Ok(Self {
            norm1: GroupNorm::load(&s.at("norm1"), spec.groups, i, spec.eps)?,
            conv1: Conv2d::load(&s.at("conv1"), i, o, 3, 1, 1)?,
            time_emb_proj: spec
                .temb_ch
                .map(|t| Linear::load(&s.at("time_emb_proj"), t, o, true))
                .transpose()?,
            norm2: GroupNorm::load(&s.at("norm2"), spec.groups, o, spec.eps)?,
            conv2: Conv2d::load(&s.at("conv2"), o, o, 3, 1, 1)?,
            shortcut: (i != o)
                .then(|| Conv2d::load(&s.at("conv_shortcut"), i, o, 1, 1, 0))
                .transpose()?,
            output_scale: spec.output_scale,
        })
    }

    /// `temb` is the already-activated time embedding, B × temb_ch.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> CResult<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward(x)?.silu()?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            h = add_frozen(&h, &proj.forward(temb)?.unsqueeze(2)?.unsqueeze(3)?)?;
        }
        let h = self.conv2.forward(&self.norm2.forward(&h)?.silu()?)?;
        let skip = match &self.shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        let out = (skip + h)?;
        if self.output_scale == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale
        }
    }
}

/// Stride-2 3×3 convolution. diffusers' VAE uses padding 0 after padding right/bottom by one.
pub struct Downsample2D {
    conv: Conv2d,
    asymmetric_pad: bool,
}

impl Downsample2D {
    pub fn load(s: &Scope, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(&s.at("conv"), channels, channels, 3, 2, padding)?,
            asymmetric_pad: padding == 0,
        })
    }

    pub fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        if self.asymmetric_pad {
            let x = x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

/// Nearest-neighbour upsampling to `size` (×2 by default) followed by a 3×3 convolution.
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn load(s: &Scope, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(&s.at("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> CResult<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        self.conv.forward(&x.upsample_nearest2d(th, tw)?)
    }
}
