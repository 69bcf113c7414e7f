//! AdamW with PyTorch's semantics (decoupled weight decay, bias correction) and a state that
//! can be saved and restored exactly, plus gradient-norm clipping.

use candle_core::{Result as CResult, Tensor, Var};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// `torch.optim.AdamW` defaults with the DreamDistribution learning rate and decay.
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

/// Moments of one parameter and the step count.
pub struct AdamW {
    pub config: AdamWConfig,
    pub step: u64,
    pub m: Tensor,
    pub v: Tensor,
}

impl AdamW {
    pub fn new(config: AdamWConfig, param: &Tensor) -> CResult<Self> {
        Ok(Self {
            config,
            step: 0,
            m: param.zeros_like()?,
            v: param.zeros_like()?,
        })
    }

    /// One update of `param` with gradient `grad`.
    pub fn step(&mut self, param: &Var, grad: &Tensor) -> CResult<()> {
        let c = self.config;
        self.step += 1;
        let t = self.step as i32;
        self.m = ((&self.m * c.beta1)? + (grad * (1.0 - c.beta1))?)?;
        self.v = ((&self.v * c.beta2)? + (grad.sqr()? * (1.0 - c.beta2))?)?;
        let m_hat = (&self.m / (1.0 - c.beta1.powi(t)))?;
        let v_hat = (&self.v / (1.0 - c.beta2.powi(t)))?;
        let decayed = (param.as_tensor() * (1.0 - c.lr * c.weight_decay))?;
        let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
        param.set(&(decayed - (update * c.lr)?)?)
    }
}

/// Scales `grad` so that its L2 norm is at most `max_norm`; returns it and the norm before.
pub fn clip_grad_norm(grad: &Tensor, max_norm: f64) -> CResult<(Tensor, f64)> {
    let norm = grad
        .sqr()?
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?
        .sqrt();
    // torch.nn.utils.clip_grad_norm_: multiply by max_norm / (norm + 1e-6) when that is < 1.
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        Ok(((grad * scale)?, norm))
    } else {
        Ok((grad.clone(), norm))
    }
}
