//! The metrics the DreamDistribution paper judges a prompt distribution by, on feature vectors
//! (one row per image) of the reference set and of the samples, in f64:
//! - FID (Heusel et al.): ‖μ_r − μ_s‖² + tr(Σ_r + Σ_s − 2(Σ_r Σ_s)^½), Σ the unbiased
//!   covariance, as pytorch-fid computes it;
//! - KID (Bińkowski et al.): the unbiased MMD² under the kernel (x·y/d + 1)³, averaged over
//!   random subsets, as torchmetrics computes it; unbiased for the small sets a reference set is;
//! - density and coverage (Naeem et al. 2020), with each reference's radius its distance to its
//!   k-th nearest other reference, as the `prdc` package computes them;
//! - mean cosine similarity between two sets (CLIP-I, DINO: DreamBooth's protocol).

use crate::error::{Error, Result};
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::seq::index::sample;
use rand::Rng;

/// Feature vectors, one row per image.
pub type Features = DMatrix<f64>;

fn check_pair(a: &Features, b: &Features, what: &str, least: usize) -> Result<()> {
    if a.ncols() != b.ncols() {
        return Err(Error::Input(format!(
            "{what}: features of {} and {} dimensions cannot be compared",
            a.ncols(),
            b.ncols()
        )));
    }
    if a.nrows() < least || b.nrows() < least {
        return Err(Error::Input(format!(
            "{what} needs at least {least} images per set, got {} and {}",
            a.nrows(),
            b.nrows()
        )));
    }
    Ok(())
}

/// Column means and the unbiased covariance (n − 1), as `np.cov(rowvar=False)`.
pub fn mean_and_covariance(x: &Features) -> (DVector<f64>, DMatrix<f64>) {
    let n = x.nrows() as f64;
    let mean = x.row_mean().transpose();
    let mut centred = x.clone();
    for mut row in centred.row_iter_mut() {
        row -= mean.transpose();
    }
    let covariance = centred.transpose() * &centred / (n - 1.0);
    (mean, covariance)
}

/// The symmetric square root of a symmetric positive semi-definite matrix (negative
/// eigenvalues from rounding taken as zero).
fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let eigen = SymmetricEigen::new((m + m.transpose()) / 2.0);
    let roots = eigen.eigenvalues.map(|v| v.max(0.0).sqrt());
    &eigen.eigenvectors * DMatrix::from_diagonal(&roots) * eigen.eigenvectors.transpose()
}

/// The Fréchet distance between Gaussians fitted to `a` and `b`. tr((Σ_a Σ_b)^½) is taken as
/// the sum of the square roots of the eigenvalues of Σ_a^½ Σ_b Σ_a^½, which is symmetric and
/// has the same spectrum: no complex rounding residue to discard, unlike a general `sqrtm`.
pub fn fid(a: &Features, b: &Features) -> Result<f64> {
    check_pair(a, b, "FID", 2)?;
    let (mu_a, sigma_a) = mean_and_covariance(a);
    let (mu_b, sigma_b) = mean_and_covariance(b);
    let root_a = sqrt_psd(&sigma_a);
    let inner = &root_a * &sigma_b * &root_a;
    let cross = SymmetricEigen::new((&inner + inner.transpose()) / 2.0)
        .eigenvalues
        .iter()
        .map(|v| v.max(0.0).sqrt())
        .sum::<f64>();
    Ok((mu_a - mu_b).norm_squared() + sigma_a.trace() + sigma_b.trace() - 2.0 * cross)
}

/// Unbiased MMD² between `x` and `y` (same size m) under the cubic polynomial kernel.
fn polynomial_mmd(x: &Features, y: &Features) -> f64 {
    let d = x.ncols() as f64;
    let kernel = |a: &Features, b: &Features| (a * b.transpose()).map(|v| (v / d + 1.0).powi(3));
    let (k_xx, k_yy, k_xy) = (kernel(x, x), kernel(y, y), kernel(x, y));
    let m = x.nrows() as f64;
    let off_diagonal = |k: &DMatrix<f64>| k.sum() - k.trace();
    (off_diagonal(&k_xx) + off_diagonal(&k_yy)) / (m * (m - 1.0)) - 2.0 * k_xy.sum() / (m * m)
}

/// KID's mean and standard deviation over `subsets` draws of `subset_size` rows (without
/// replacement) from each set; with `subset_size` equal to both sets' sizes every draw is the
/// whole of both, the exact unbiased statistic.
pub fn kid(
    a: &Features,
    b: &Features,
    subsets: usize,
    subset_size: usize,
    rng: &mut impl Rng,
) -> Result<(f64, f64)> {
    check_pair(a, b, "KID", 2)?;
    let largest = a.nrows().min(b.nrows());
    if subset_size < 2 || subset_size > largest || subsets == 0 {
        return Err(Error::Input(format!(
            "KID: subsets of 2 to {largest} images (the smaller set), at least one subset; got {subsets} of {subset_size}"
        )));
    }
    let values: Vec<f64> = (0..subsets)
        .map(|_| {
            let pick = |x: &Features, rng: &mut dyn rand::RngCore| {
                x.select_rows(
                    sample(rng, x.nrows(), subset_size)
                        .iter()
                        .collect::<Vec<_>>()
                        .iter(),
                )
            };
            let (x, y) = (pick(a, rng), pick(b, rng));
            polynomial_mmd(&x, &y)
        })
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    // torch.std's default: the unbiased estimate (0 for a single subset).
    let std = if values.len() > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
    } else {
        0.0
    };
    Ok((mean, std))
}

/// Euclidean distances between the rows of `a` and of `b`.
fn distances(a: &Features, b: &Features) -> DMatrix<f64> {
    DMatrix::from_fn(a.nrows(), b.nrows(), |i, j| (a.row(i) - b.row(j)).norm())
}

/// Naeem et al.'s density and coverage of `samples` against `reference`, with the k-th
/// nearest neighbour radii of the reference.
pub fn density_coverage(reference: &Features, samples: &Features, k: usize) -> Result<(f64, f64)> {
    check_pair(reference, samples, "density and coverage", 1)?;
    if k == 0 || k >= reference.nrows() {
        return Err(Error::Input(format!(
            "density and coverage: k = {k} needs more than k reference images (got {}); lower k",
            reference.nrows()
        )));
    }
    let within = distances(reference, reference);
    let radii: Vec<f64> = within
        .row_iter()
        .map(|row| {
            let mut d: Vec<f64> = row.iter().copied().collect();
            d.sort_by(f64::total_cmp);
            // d[0] is the image itself.
            d[k]
        })
        .collect();
    let across = distances(reference, samples);
    let inside = |i: usize, j: usize| across[(i, j)] < radii[i];
    let (n, m) = (reference.nrows(), samples.nrows());
    let density = (0..m)
        .map(|j| (0..n).filter(|&i| inside(i, j)).count() as f64)
        .sum::<f64>()
        / (k as f64 * m as f64);
    let coverage = (0..n)
        .filter(|&i| {
            let nearest = across.row(i).iter().copied().fold(f64::INFINITY, f64::min);
            nearest < radii[i]
        })
        .count() as f64
        / n as f64;
    Ok((density, coverage))
}

/// Mean cosine similarity over every (a, b) pair of rows.
pub fn mean_cosine(a: &Features, b: &Features) -> Result<f64> {
    check_pair(a, b, "cosine similarity", 1)?;
    let unit = |x: &Features| {
        let mut x = x.clone();
        for mut row in x.row_iter_mut() {
            let norm = row.norm();
            if norm > 0.0 {
                row /= norm;
            }
        }
        x
    };
    let sims = unit(a) * unit(b).transpose();
    Ok(sims.sum() / (a.nrows() * b.nrows()) as f64)
}
