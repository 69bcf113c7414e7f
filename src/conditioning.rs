//! What images and assets are conditioned on: one distribution (named, or the latest fitted
//! one), a composition of several (`--mix`), or a plain prompt; with an optional edit and γ.

use crate::error::{Error, Result};
use crate::prompt::gaussian::check_weights;
use crate::prompt::{Edit, Gaussian, PromptDistribution};
use crate::run_dir::LATEST_DISTRIBUTION;
use crate::sample::Models;
use std::path::{Path, PathBuf};

/// One member of a composition: `PATH:WEIGHT[:GAMMA]` on the command line (`--mix`).
#[derive(Debug, Clone, PartialEq)]
pub struct MixSpec {
    pub path: PathBuf,
    pub weight: f64,
    pub gamma: Option<f64>,
}

/// Parses `PATH:WEIGHT[:GAMMA]` from the right, so paths may contain colons.
pub fn parse_mix(s: &str) -> std::result::Result<MixSpec, String> {
    let number = |v: &str| v.parse::<f64>().ok();
    let usage =
        || format!("`{s}`: use PATH:WEIGHT or PATH:WEIGHT:GAMMA, e.g. cats.dist.safetensors:0.7");
    let (rest, last) = s.rsplit_once(':').ok_or_else(usage)?;
    let last = number(last).ok_or_else(usage)?;
    let (path, weight, gamma) = match rest.rsplit_once(':') {
        Some((path, w)) if number(w).is_some() => (path, number(w).unwrap(), Some(last)),
        _ => (rest, last, None),
    };
    if path.is_empty() {
        return Err(usage());
    }
    Ok(MixSpec {
        path: PathBuf::from(path),
        weight,
        gamma,
    })
}

/// One distribution of the conditioning, with its weight and variance scale.
pub struct Member {
    pub path: PathBuf,
    pub weight: f64,
    pub gamma: f64,
    pub distribution: PromptDistribution,
}

pub enum Source {
    Distributions(Vec<Member>),
    Prompt(String),
}

impl Source {
    /// Loads and cross-checks the distributions (on the CPU: they are small) before any model
    /// is loaded, so that bad mixes fail at once.
    pub fn distributions(specs: Vec<MixSpec>, default_gamma: f64) -> Result<Self> {
        check_weights(&specs.iter().map(|m| m.weight).collect::<Vec<_>>())?;
        let members = specs
            .into_iter()
            .map(|spec| {
                let gamma = spec.gamma.unwrap_or(default_gamma);
                if !(gamma.is_finite() && gamma >= 0.0) {
                    return Err(Error::Input(format!(
                        "γ = {gamma} for {}: the variance scale (--gamma, or GAMMA in --mix PATH:WEIGHT:GAMMA) must be a finite number ≥ 0; 0 gives the mean prompt",
                        spec.path.display()
                    )));
                }
                let distribution = PromptDistribution::load(&spec.path, &candle_core::Device::Cpu)?;
                Ok(Member {
                    gamma,
                    path: spec.path,
                    weight: spec.weight,
                    distribution,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let first = &members[0];
        for other in &members[1..] {
            let shape = |m: &Member| {
                let meta = &m.distribution.meta;
                (meta.text_hidden_size, meta.text_layers, meta.text_vocab)
            };
            if shape(first) != shape(other) {
                return Err(Error::Input(format!(
                    "cannot mix {} (fitted on {}, text encoder {:?}) with {} (fitted on {}, text encoder {:?}): mixed distributions must share the base text encoder (width, layers, vocabulary)",
                    first.path.display(),
                    first.distribution.meta.base_model,
                    shape(first),
                    other.path.display(),
                    other.distribution.meta.base_model,
                    shape(other)
                )));
            }
        }
        Ok(Self::Distributions(members))
    }

    /// The model to sample with when `--model` is not given: the one the (first) distribution
    /// was fitted on, or fit's default for a plain prompt.
    pub fn default_model(&self) -> String {
        match self {
            Self::Distributions(m) => m[0].distribution.meta.base_model.clone(),
            Self::Prompt(_) => crate::fit::FitConfig::default().model,
        }
    }

    /// What each image is conditioned on, for people: `* made of gold`, or the prompt.
    pub fn describe(&self, edit: Option<&Edit>) -> String {
        match self {
            Self::Prompt(p) => format!("\"{p}\""),
            Self::Distributions(members) => {
                let template = members[0].distribution.meta.template();
                let text = match edit {
                    Some(e) => e.describe(&template),
                    None => Edit::Append(String::new()).describe(&template),
                };
                let parts: Vec<String> = members
                    .iter()
                    .map(|m| format!("{} × {} (γ {})", m.weight, m.path.display(), m.gamma))
                    .collect();
                format!("\"{text}\" from {}", parts.join(" + "))
            }
        }
    }

    /// The Gaussian each image's conditioning is drawn from, on the model's device in f32.
    pub fn gaussian(&self, models: Models, edit: Option<&Edit>) -> Result<Gaussian> {
        let device = models.device();
        let f32 = candle_core::DType::F32;
        match self {
            Self::Prompt(p) => {
                Ok(Gaussian::point(&models.encode_text(p)?.squeeze(0)?)?.to(device, f32)?)
            }
            Self::Distributions(members) => {
                let mut parts = Vec::with_capacity(members.len());
                for m in members {
                    let d = &m.distribution;
                    d.check_compatible(&models.text_encoder.config, &m.path)?;
                    let fitted =
                        match edit {
                            Some(e) => d.edited(e, models.text_encoder, models.tokenizer).map_err(
                                |err| Error::Input(format!("editing {}: {err}", m.path.display())),
                            )?,
                            None => d.gaussian(),
                        };
                    parts.push((fitted.to(device, f32)?.scaled(m.gamma)?, m.weight));
                }
                Ok(Gaussian::compose(&parts)?)
            }
        }
    }
}

/// The distribution named on the command line, or else the latest one `dream3d fit` left.
pub fn chosen_distribution(named: Option<&Path>) -> Result<PathBuf> {
    let latest = Path::new(LATEST_DISTRIBUTION);
    match named {
        Some(path) => Ok(path.to_path_buf()),
        None if latest.is_file() => Ok(latest.to_path_buf()),
        None => Err(Error::Input(format!(
            "no prompt distribution given, and none at {} (where `dream3d fit REFS` leaves one): name a .dist.safetensors file, or use --prompt TEXT",
            latest.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_specs_parse_from_the_right() {
        let m = parse_mix("a.dist.safetensors:0.7").unwrap();
        assert_eq!(
            (m.path.to_str().unwrap(), m.weight, m.gamma),
            ("a.dist.safetensors", 0.7, None)
        );
        let m = parse_mix("C:/x/b.dist:0.3:1.5").unwrap();
        assert_eq!(
            (m.path.to_str().unwrap(), m.weight, m.gamma),
            ("C:/x/b.dist", 0.3, Some(1.5))
        );
        assert!(parse_mix("a.dist").is_err());
        assert!(parse_mix(":0.5").is_err());
    }
}
