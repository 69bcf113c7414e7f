//! Activations, each with a working backward.

use candle_core::{Result as CResult, Tensor};

/// The activations that model configs name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU: PyTorch `F.gelu`, SD 2.x's text encoder.
    Gelu,
    /// `x·σ(1.702x)`: OpenAI CLIP / SD 1.x.
    QuickGelu,
    Silu,
}

impl Activation {
    /// Parses a `hidden_act` / `act_fn` value from a config file.
    pub fn from_config(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "quick_gelu" => Some(Self::QuickGelu),
            "silu" | "swish" => Some(Self::Silu),
            _ => None,
        }
    }

    pub fn forward(self, x: &Tensor) -> CResult<Tensor> {
        match self {
            Self::Gelu => x.gelu_erf(),
            Self::QuickGelu => x.mul(&sigmoid(&(x * 1.702)?)?),
            Self::Silu => x.silu(),
        }
    }
}

/// Logistic sigmoid from primitive ops (so it differentiates everywhere candle does).
pub fn sigmoid(x: &Tensor) -> CResult<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}
