//! DreamDistribution's prompt learner: K soft prompts whose text-encoder outputs define a
//! diagonal Gaussian over the 77 × D conditioning, sampled with the reparameterisation trick,
//! plus the orthogonality loss that keeps the K prompts apart.

use super::sequence::Frame;
use crate::diffusion::NoiseSchedule;
use crate::models::{ClipTextModel, UNet2DConditionModel};
use crate::nn::FrozenOp;
use candle_core::{DType, Device, IndexOp, Result as CResult, Tensor, Var, D};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// Standard deviation of the soft-token initialisation (CoOp / official code).
pub const INIT_STD: f64 = 0.02;

/// K × L × D learnable token embeddings drawn from N(0, 0.02²) with a seeded RNG.
pub fn init_soft_prompts(
    k: usize,
    l: usize,
    d: usize,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> CResult<Var> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0, INIT_STD).expect("valid std");
    let values: Vec<f64> = (0..k * l * d).map(|_| normal.sample(&mut rng)).collect();
    Var::from_tensor(&Tensor::from_vec(values, (k, l, d), device)?.to_dtype(dtype)?)
}

/// The K prompts after the text encoder.
pub struct Encoded {
    /// K × 77 × D final-layer-norm hidden states.
    pub hidden: Tensor,
    /// K × D hidden states at the end-of-text slot.
    pub pooled: Tensor,
}

pub fn encode(text: &ClipTextModel, frame: &Frame, soft: &Tensor) -> CResult<Encoded> {
    encode_with(text, frame, soft, false)
}

/// [`encode`], with the text encoder's gradient checkpointing on or off.
pub fn encode_with(
    text: &ClipTextModel,
    frame: &Frame,
    soft: &Tensor,
    checkpointing: bool,
) -> CResult<Encoded> {
    let hidden = text.forward_embeds_with(&frame.fill(soft)?, checkpointing)?;
    let pooled = hidden.i((.., frame.eos))?.contiguous()?;
    Ok(Encoded { hidden, pooled })
}

/// Mean and unbiased standard deviation over the K prompts (dim 0): two 77 × D tensors.
pub fn gaussian(hidden: &Tensor) -> CResult<(Tensor, Tensor)> {
    let k = hidden.dim(0)?;
    if k < 2 {
        candle_core::bail!("a prompt distribution needs K ≥ 2 prompts (got {k})");
    }
    let mu = hidden.mean(0)?;
    let var = (hidden.broadcast_sub(&mu)?.sqr()?.sum(0)? / (k - 1) as f64)?;
    Ok((mu, sqrt_zero_safe(&var)?))
}

/// √x whose gradient is 0 where x = 0 (as torch.std's backward): the BOS slot is identical
/// across prompts, and 1/(2√0) would turn the whole gradient into NaN.
fn sqrt_zero_safe(x: &Tensor) -> CResult<Tensor> {
    FrozenOp::new(
        "sqrt-zero-safe",
        |x: &Tensor| x.sqrt(),
        |_: &Tensor, y: &Tensor, g: &Tensor| {
            let positive = y.gt(0.0)?;
            let safe = positive.where_cond(y, &y.ones_like()?)?;
            positive.where_cond(&(g / (safe * 2.0)?)?, &g.zeros_like()?)
        },
    )
    .apply(x, &[])
}

/// Mean over ordered pairs i ≠ j of the squared cosine similarity of the pooled features.
pub fn orthogonality_loss(pooled: &Tensor) -> CResult<Tensor> {
    let k = pooled.dim(0)?;
    let norms = pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    let unit = pooled.broadcast_div(&norms)?;
    let cos2 = unit.matmul(&unit.t()?)?.sqr()?;
    let off_diagonal = (Tensor::ones((k, k), cos2.dtype(), cos2.device())?
        - Tensor::eye(k, cos2.dtype(), cos2.device())?)?;
    (cos2 * off_diagonal)?.sum_all()? / (k * (k - 1)) as f64
}

/// c = μ + σ ⊙ ε for each ε (N × 77 × D): N conditionings.
pub fn reparameterize(mu: &Tensor, sigma: &Tensor, eps: &Tensor) -> CResult<Tensor> {
    eps.broadcast_mul(sigma)?.broadcast_add(mu)
}

/// Min-SNR loss weight min(SNR, γ)/SNR at `t` (γ = 0 disables weighting). The official code
/// applies this ε-style formula for v-prediction too.
pub fn min_snr_weight(schedule: &NoiseSchedule, t: usize, gamma: f64) -> f64 {
    if gamma <= 0.0 {
        return 1.0;
    }
    let snr = schedule.snr(t);
    snr.min(gamma) / snr
}

/// One batch of the diffusion term: for each image b (clean latents `x0[b]`, noise `noise[b]`,
/// timestep `t[b]`) the UNet predicts M times, once per conditioning `cond[b·M + m]`; the
/// result is the Min-SNR-weighted mean squared error against the scheduler's target.
pub fn diffusion_loss(
    unet: &UNet2DConditionModel,
    schedule: &NoiseSchedule,
    x0: &Tensor,
    noise: &Tensor,
    timesteps: &[usize],
    cond: &Tensor,
    snr_gamma: f64,
) -> CResult<Tensor> {
    let b = x0.dim(0)?;
    let m = cond.dim(0)? / b;
    let mut noisy = Vec::with_capacity(b);
    let mut targets = Vec::with_capacity(b);
    for (i, &t) in timesteps.iter().enumerate() {
        let (x, n) = (x0.i(i..i + 1)?, noise.i(i..i + 1)?);
        noisy.push(schedule.add_noise(&x, &n, t)?);
        targets.push(schedule.target(&x, &n, schedule.alphas_cumprod[t])?);
    }
    let repeat = |parts: &[Tensor]| -> CResult<Tensor> {
        let each: Vec<Tensor> = parts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.clone(), m))
            .collect();
        Tensor::cat(&each, 0)
    };
    let t_rep: Vec<f64> = timesteps
        .iter()
        .flat_map(|&t| std::iter::repeat_n(t as f64, m))
        .collect();
    let pred = unet.forward(&repeat(&noisy)?, &t_rep, cond)?;
    let per_sample = (pred - repeat(&targets)?)?
        .sqr()?
        .flatten_from(1)?
        .mean(1)?;
    let weights: Vec<f64> = timesteps
        .iter()
        .flat_map(|&t| std::iter::repeat_n(min_snr_weight(schedule, t, snr_gamma), m))
        .collect();
    let weights = Tensor::new(weights, per_sample.device())?.to_dtype(per_sample.dtype())?;
    (per_sample * weights)?.mean_all()
}
