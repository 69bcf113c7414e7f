//! Seeded randomness for long runs: each step draws from its own generator, so a resumed run
//! repeats an uninterrupted one exactly.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// The generator of step `step` of a run seeded with `seed`.
pub fn step_rng(seed: u64, step: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(
        seed ^ step.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

/// Standard-normal values of `shape` from `rng` (not candle's unseeded generator).
pub fn randn(
    rng: &mut impl Rng,
    shape: &[usize],
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
    Tensor::from_vec(v, shape, device)?.to_dtype(dtype)
}
