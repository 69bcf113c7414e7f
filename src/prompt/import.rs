//! Reading the official DreamDistribution outputs: the learned context from a `.pt` checkpoint
//! (`{"model_state_dict": {"ctx": 1×K×L×D}}`) and, optionally, μ and σ from the `.npz` its `fit()`
//! writes (`means`, `stds`: 1×77×D).

use super::distribution::{DistributionMeta, PromptDistribution, FORMAT_VERSION};
use super::learner::{encode, gaussian};
use super::sequence::{Frame, PositionMode, Template};
use crate::error::{Error, Result};
use crate::stable_diffusion::StableDiffusion;
use candle_core::{DType, Tensor};
use std::path::Path;

/// The learned context `ctx` as K × L × D.
pub fn read_context(path: &Path) -> Result<Tensor> {
    let read = |key: Option<&str>| candle_core::pickle::read_all_with_key(path, key).ok();
    let tensors = read(Some("model_state_dict"))
        .filter(|t| t.iter().any(|(n, _)| n == "ctx"))
        .or_else(|| read(None))
        .unwrap_or_default();
    let ctx = tensors
        .into_iter()
        .find(|(n, _)| n == "ctx")
        .map(|(_, t)| t)
        .ok_or_else(|| {
            Error::Input(format!(
                "{}: no `ctx` tensor (expected an official prompt_learner checkpoint)",
                path.display()
            ))
        })?;
    match ctx.dims() {
        [1, _, _, _] => Ok(ctx.squeeze(0)?.to_dtype(DType::F32)?),
        [_, _, _] => Ok(ctx.to_dtype(DType::F32)?),
        dims => Err(Error::Input(format!(
            "{}: ctx has shape {dims:?}; only the single-set (customize) mode, 1×K×L×D, is supported, not class-conditional learners",
            path.display()
        ))),
    }
}

/// `means` and `stds` of an official `.npz`, as 77 × D.
pub fn read_moments(path: &Path) -> Result<(Tensor, Tensor)> {
    let arrays = Tensor::read_npz_by_name(path, &["means", "stds"]).map_err(|e| {
        Error::Input(format!(
            "{}: cannot read `means`/`stds` ({e})",
            path.display()
        ))
    })?;
    let squeeze = |t: &Tensor| -> Result<Tensor> {
        let t = if t.rank() == 3 {
            t.squeeze(0)?
        } else {
            t.clone()
        };
        Ok(t.to_dtype(DType::F32)?)
    };
    Ok((squeeze(&arrays[0])?, squeeze(&arrays[1])?))
}

/// A distribution from official outputs. μ and σ come from `npz` when given (the official
/// numbers), else from encoding the context with `sd`'s text encoder as the official code does.
pub fn import_official(
    ctx_path: &Path,
    npz_path: Option<&Path>,
    sd: &StableDiffusion,
    template: &Template,
) -> Result<PromptDistribution> {
    let soft = read_context(ctx_path)?;
    let (k, l, d) = soft.dims3()?;
    let text = &sd.text_encoder.config;
    if d != text.hidden_size || k < 2 {
        return Err(Error::Input(format!(
            "{}: {k} prompts of width {d}; the model's text encoder has width {} and a distribution needs K ≥ 2",
            ctx_path.display(),
            text.hidden_size
        )));
    }
    let (mu, sigma) = match npz_path {
        Some(npz) => {
            let (mu, sigma) = read_moments(npz)?;
            if mu.dims() != [crate::tokenizer::CONTEXT_LENGTH, d] || sigma.dims() != mu.dims() {
                return Err(Error::Input(format!(
                    "{}: means/stds have shape {:?}, expected [77, {d}]",
                    npz.display(),
                    mu.dims()
                )));
            }
            (mu, sigma)
        }
        None => {
            let frame = Frame::new(
                &sd.text_encoder,
                &sd.tokenizer,
                template,
                l,
                PositionMode::Official,
            )?;
            let enc = encode(&sd.text_encoder, &frame, &soft.to_dtype(sd.dtype)?)?;
            gaussian(&enc.hidden)?
        }
    };
    Ok(PromptDistribution {
        soft_prompts: soft,
        mu,
        sigma,
        meta: DistributionMeta {
            format: "dream3d-prompt-distribution".into(),
            format_version: FORMAT_VERSION,
            base_model: sd.files.name.clone(),
            text_hidden_size: text.hidden_size,
            text_layers: text.num_hidden_layers,
            text_vocab: text.vocab_size,
            prediction_type: sd.schedule.prediction,
            prompts: k,
            tokens_per_prompt: l,
            prefix: template.prefix.clone(),
            suffix: template.suffix.clone(),
            position_mode: PositionMode::Official,
            steps: 0,
            seed: 0,
            dream3d_version: env!("CARGO_PKG_VERSION").into(),
        },
    })
}
