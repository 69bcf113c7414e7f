//! diffusers `Transformer2DModel` with `BasicTransformerBlock`s: the spatial transformer of the
//! SD UNet (self-attention, cross-attention to the text, GEGLU feed-forward).

use crate::error::Result;
use crate::nn::{Attention, Conv2d, GroupNorm, LayerNorm, Linear};
use crate::weights::Scope;
use candle_core::{Result as CResult, Tensor, D};

/// Sizes of one `Transformer2DModel`.
pub struct TransformerSpec {
    pub channels: usize,
    pub heads: usize,
    pub depth: usize,
    pub context_dim: usize,
    pub groups: usize,
    pub linear_projection: bool,
}

struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let h = self.proj.forward(x)?;
        let half = h.dim(D::Minus1)? / 2;
        let gated =
            (h.narrow(D::Minus1, 0, half)? * h.narrow(D::Minus1, half, half)?.gelu_erf()?)?;
        self.out.forward(&gated)
    }
}

struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

fn load_attention(s: &Scope, dim: usize, context_dim: usize, heads: usize) -> Result<Attention> {
    Ok(Attention {
        to_q: Linear::load(&s.at("to_q"), dim, dim, false)?,
        to_k: Linear::load(&s.at("to_k"), context_dim, dim, false)?,
        to_v: Linear::load(&s.at("to_v"), context_dim, dim, false)?,
        to_out: Linear::load(&s.at("to_out.0"), dim, dim, true)?,
        heads,
    })
}

impl BasicTransformerBlock {
    fn load(s: &Scope, dim: usize, spec: &TransformerSpec) -> Result<Self> {
        let ff_inner = 4 * dim;
        Ok(Self {
            norm1: LayerNorm::load(&s.at("norm1"), dim, 1e-5)?,
            attn1: load_attention(&s.at("attn1"), dim, dim, spec.heads)?,
            norm2: LayerNorm::load(&s.at("norm2"), dim, 1e-5)?,
            attn2: load_attention(&s.at("attn2"), dim, spec.context_dim, spec.heads)?,
            norm3: LayerNorm::load(&s.at("norm3"), dim, 1e-5)?,
            ff: FeedForward {
                proj: Linear::load(&s.at("ff.net.0.proj"), dim, 2 * ff_inner, true)?,
                out: Linear::load(&s.at("ff.net.2"), ff_inner, dim, true)?,
            },
        })
    }

    /// `x`: (objects·frames) × L × C. Self-attention runs jointly over the `frames` views of
    /// each object (MVDream; 1 = plain SD), cross-attention per view.
    fn forward(&self, x: &Tensor, context: &Tensor, frames: usize) -> CResult<Tensor> {
        let (bf, l, c) = x.dims3()?;
        let joint = self
            .norm1
            .forward(x)?
            .reshape((bf / frames, frames * l, c))?;
        let attended = self
            .attn1
            .forward(&joint, None, None)?
            .reshape((bf, l, c))?;
        let x = (x + attended)?;
        let x = (&x
            + self
                .attn2
                .forward(&self.norm2.forward(&x)?, Some(context), None)?)?;
        &x + self.ff.forward(&self.norm3.forward(&x)?)?
    }
}

/// Input/output projections: linear on tokens (SD 2.x) or 1×1 convolutions on the map (SD 1.x).
enum Projection {
    Linear(Linear),
    Conv(Conv2d),
}

pub struct Transformer2D {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2D {
    pub fn load(s: &Scope, spec: &TransformerSpec) -> Result<Self> {
        let c = spec.channels;
        let proj = |name: &str| -> Result<Projection> {
            Ok(if spec.linear_projection {
                Projection::Linear(Linear::load(&s.at(name), c, c, true)?)
            } else {
                Projection::Conv(Conv2d::load(&s.at(name), c, c, 1, 1, 0)?)
            })
        };
        Ok(Self {
            norm: GroupNorm::load(&s.at("norm"), spec.groups, c, 1e-6)?,
            proj_in: proj("proj_in")?,
            blocks: (0..spec.depth)
                .map(|i| {
                    BasicTransformerBlock::load(&s.at(format!("transformer_blocks.{i}")), c, spec)
                })
                .collect::<Result<_>>()?,
            proj_out: proj("proj_out")?,
        })
    }

    /// `x`: B × C × H × W with B = objects · `frames`, object-major.
    pub fn forward(&self, x: &Tensor, context: &Tensor, frames: usize) -> CResult<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let to_tokens = |t: &Tensor| t.permute((0, 2, 3, 1))?.reshape((b, h * w, c));
        let to_map = |t: &Tensor| t.reshape((b, h, w, c))?.permute((0, 3, 1, 2));
        let normed = self.norm.forward(x)?;
        let mut tokens = match &self.proj_in {
            Projection::Linear(l) => l.forward(&to_tokens(&normed)?)?,
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context, frames)?;
        }
        let out = match &self.proj_out {
            Projection::Linear(l) => to_map(&l.forward(&tokens)?)?,
            Projection::Conv(conv) => conv.forward(&to_map(&tokens)?.contiguous()?)?,
        };
        out + x
    }
}
