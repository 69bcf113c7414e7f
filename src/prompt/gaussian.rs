//! The diagonal Gaussian over 77 × D conditionings that inference draws from: one fitted
//! distribution scaled by γ, or a weighted composition of several.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;

/// Weights of a composition may miss 1 by this much (the official code demands exact equality,
/// which rejects [0.7, 0.2, 0.1] for float rounding alone).
pub const WEIGHT_SUM_TOLERANCE: f64 = 1e-6;

/// Composition weights must be positive and sum to 1.
pub fn check_weights(weights: &[f64]) -> Result<()> {
    if let Some(w) = weights.iter().find(|w| !(**w > 0.0 && w.is_finite())) {
        return Err(Error::Input(format!(
            "composition weight {w} is not positive: give every --mix a weight in (0, 1]"
        )));
    }
    let total: f64 = weights.iter().sum();
    if (total - 1.0).abs() > WEIGHT_SUM_TOLERANCE {
        let listed: Vec<String> = weights.iter().map(f64::to_string).collect();
        return Err(Error::Input(format!(
            "composition weights {} sum to {total}, not 1: rescale them (e.g. divide each by {total})",
            listed.join(" + ")
        )));
    }
    Ok(())
}

/// N(μ, σ²) elementwise over a 77 × D conditioning.
#[derive(Debug, Clone)]
pub struct Gaussian {
    pub mu: Tensor,
    pub sigma: Tensor,
}

impl Gaussian {
    /// The distribution of one fixed conditioning (a plain text prompt): σ = 0.
    pub fn point(c: &Tensor) -> Result<Self> {
        Ok(Self {
            mu: c.clone(),
            sigma: c.zeros_like()?,
        })
    }

    /// The same distribution on `device` in `dtype`.
    pub fn to(&self, device: &Device, dtype: DType) -> Result<Self> {
        Ok(Self {
            mu: self.mu.to_device(device)?.to_dtype(dtype)?,
            sigma: self.sigma.to_device(device)?.to_dtype(dtype)?,
        })
    }

    /// Variance scaling: σ' = γσ (γ = 0 keeps only the mean prompt).
    pub fn scaled(&self, gamma: f64) -> Result<Self> {
        Ok(Self {
            mu: self.mu.clone(),
            sigma: (&self.sigma * gamma)?,
        })
    }

    /// The law of Σ wᵢ·cᵢ for independent cᵢ ~ parts[i]: μ = Σ wᵢμᵢ, σ = √Σ (wᵢσᵢ)².
    /// (A linear interpolation of samples, not a mixture.) Weights must be positive and sum
    /// to 1; per-distribution γ is applied by the caller with [`Gaussian::scaled`] first.
    pub fn compose(parts: &[(Gaussian, f64)]) -> Result<Self> {
        let Some(((first, _), _)) = parts.split_first() else {
            return Err(Error::Input(
                "composition needs at least one distribution".into(),
            ));
        };
        check_weights(&parts.iter().map(|(_, w)| *w).collect::<Vec<_>>())?;
        let mut mu = first.mu.zeros_like()?;
        let mut variance = first.sigma.zeros_like()?;
        for (g, w) in parts {
            if g.mu.dims() != first.mu.dims() {
                return Err(Error::Input(format!(
                    "cannot compose conditionings of shapes {:?} and {:?}: the distributions come from different text encoders",
                    first.mu.dims(),
                    g.mu.dims()
                )));
            }
            mu = (mu + (&g.mu * *w)?)?;
            variance = (variance + (&g.sigma * *w)?.sqr()?)?;
        }
        Ok(Self {
            mu,
            sigma: variance.sqrt()?,
        })
    }

    /// One conditioning μ + σ ⊙ ε with ε ~ N(0, I) drawn from `rng` (always the same number
    /// of draws, so a seed gives the same ε whatever σ is).
    pub fn sample(&self, rng: &mut impl Rng) -> Result<Tensor> {
        let n = self.mu.elem_count();
        let eps: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
        let eps =
            Tensor::from_vec(eps, self.mu.shape(), self.mu.device())?.to_dtype(self.mu.dtype())?;
        Ok(((eps * &self.sigma)? + &self.mu)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constant(mu: f32, sigma: f32) -> Gaussian {
        Gaussian {
            mu: Tensor::full(mu, (77, 4), &Device::Cpu).unwrap(),
            sigma: Tensor::full(sigma, (77, 4), &Device::Cpu).unwrap(),
        }
    }

    fn value(t: &Tensor) -> f32 {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
    }

    #[test]
    fn composition_follows_the_weighted_sum_of_gaussians() {
        let a = constant(1.0, 2.0).scaled(1.5).unwrap();
        let b = constant(-3.0, 4.0);
        let c = Gaussian::compose(&[(a, 0.7), (b, 0.3)]).unwrap();
        assert!((value(&c.mu) - (0.7 * 1.0 - 0.3 * 3.0)).abs() < 1e-6);
        let sigma = ((0.7f64 * 1.5 * 2.0).powi(2) + (0.3f64 * 4.0).powi(2)).sqrt();
        assert!((value(&c.sigma) as f64 - sigma).abs() < 1e-6);
    }

    #[test]
    fn weights_are_checked() {
        let two = |w1, w2| Gaussian::compose(&[(constant(0., 1.), w1), (constant(0., 1.), w2)]);
        let err = two(0.7, 0.2).unwrap_err().to_string();
        assert!(err.contains("sum to 0.8999"), "{err}");
        assert!(two(0.5, -0.5)
            .unwrap_err()
            .to_string()
            .contains("not positive"));
        // Float rounding alone is accepted (numpy's exact check rejects 0.7 + 0.2 + 0.1).
        let three = [
            (constant(0., 1.), 0.7),
            (constant(0., 1.), 0.2),
            (constant(0., 1.), 0.1),
        ];
        Gaussian::compose(&three).unwrap();
    }

    #[test]
    fn gamma_zero_gives_the_mean() {
        let g = constant(0.25, 3.0).scaled(0.0).unwrap();
        let c = g.sample(&mut rand::rng()).unwrap();
        assert_eq!(
            c.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.25; 77 * 4]
        );
    }
}
