//! `fit`: learn a prompt distribution from reference images (DreamDistribution).
//!
//! The trainer reports through [`FitEvent`]s; the CLI renders them (progress bar or log lines),
//! so other front ends can consume the same stream.

pub mod checkpoint;
pub mod config;
pub mod images;

use crate::error::{Error, Result};
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig};
use crate::prompt::learner::{
    self, diffusion_loss, encode, encode_with, gaussian, orthogonality_loss, reparameterize,
};
use crate::prompt::{DistributionMeta, Frame, PromptDistribution, Template};
use crate::random::{randn, step_rng};
pub use crate::run_dir::{RunConfig, RunDir};
use crate::stable_diffusion::StableDiffusion;
use candle_core::{DType, Tensor, Var};
use checkpoint::Checkpoint;
pub use config::FitConfig;
use rand::Rng;

/// Cached crop latents in the run directory.
pub const LATENTS_FILE: &str = "latents.safetensors";
/// The fitted distribution in the run directory.
pub const DISTRIBUTION_FILE: &str = "distribution.safetensors";
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What the trainer reports.
#[derive(Debug, Clone)]
pub enum FitEvent {
    /// Reference crops are encoded; training starts at `start_step`.
    Ready {
        images: usize,
        crops: usize,
        resolution: usize,
        start_step: usize,
    },
    Step(StepMetrics),
    Checkpoint {
        next_step: usize,
    },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StepMetrics {
    pub step: usize,
    pub loss: f64,
    pub diffusion: f64,
    pub orthogonality: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub it_per_s: f64,
}

/// How a fit ended.
#[derive(Debug)]
pub enum FitOutcome {
    Finished(PromptDistribution),
    /// Stopped on request with a checkpoint of the last completed step.
    Interrupted {
        next_step: usize,
    },
}

/// A seeded generator for everything random in `step`: a resumed run draws exactly the same
/// batches and noise as an uninterrupted one.
/// VAE posteriors of the cached crops: N·C × z × h × w means and log-variances.
struct CachedLatents {
    mean: Tensor,
    logvar: Tensor,
    crops_per_image: usize,
}

fn encode_crops(
    sd: &StableDiffusion,
    config: &FitConfig,
    resolution: usize,
    run: &RunDir,
) -> Result<CachedLatents> {
    let path = run.path(LATENTS_FILE);
    let device = sd.unet_device();
    if path.is_file() {
        let mut t = candle_core::safetensors::load(&path, &device)?;
        let (mean, logvar) = (t.remove("mean"), t.remove("logvar"));
        if let (Some(mean), Some(logvar)) = (mean, logvar) {
            return Ok(CachedLatents {
                mean,
                logvar,
                crops_per_image: config.crops_per_image,
            });
        }
    }
    let images = images::load_folder(&config.refs)?;
    let mut rng = step_rng(config.seed, u64::MAX);
    let (mut means, mut logvars) = (vec![], vec![]);
    for (_, img) in &images {
        for _ in 0..config.crops_per_image {
            let crop = images::random_crop(img, resolution as u32, &mut rng);
            let x = images::to_tensor(&crop, &device)?.to_dtype(sd.dtype)?;
            let dist = sd.vae.encode(&x)?;
            means.push(dist.mean);
            logvars.push(dist.logvar);
        }
    }
    let cached = CachedLatents {
        mean: Tensor::cat(&means, 0)?,
        logvar: Tensor::cat(&logvars, 0)?,
        crops_per_image: config.crops_per_image,
    };
    let tmp = path.with_extension("tmp");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([
            ("mean".to_string(), cached.mean.clone()),
            ("logvar".to_string(), cached.logvar.clone()),
        ]),
        &tmp,
    )?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(cached)
}

/// Runs (or continues) the fit recorded in `run` until `config.steps`, or until `stop` is set.
pub fn fit(
    config: &FitConfig,
    sd: &StableDiffusion,
    run: &RunDir,
    stop: &AtomicBool,
    mut on_event: impl FnMut(FitEvent),
) -> Result<FitOutcome> {
    config.validate()?;
    let device = sd.unet_device();
    let dtype = sd.dtype;
    let resolution = config.resolution.or(sd.resolution()).unwrap_or(512);
    let multiple = sd.vae.config.downscale() * (1 << (sd.unet.config.block_out_channels.len() - 1));
    if resolution % multiple != 0 {
        return Err(Error::Input(format!(
            "--resolution {resolution} must be a multiple of {multiple} for this model"
        )));
    }
    let latents = encode_crops(sd, config, resolution, run)?;
    let n_images = latents.mean.dim(0)? / latents.crops_per_image;
    let batch = config.batch.min(n_images);

    let d = sd.text_encoder.config.hidden_size;
    let (soft, mut opt, start) = match Checkpoint::load(&run.checkpoint_path(), &device) {
        Ok(c) => {
            let soft = Var::from_tensor(&c.soft_prompts.to_dtype(DType::F32)?)?;
            let mut opt = AdamW::new(adam_config(config), soft.as_tensor())?;
            (opt.step, opt.m, opt.v) = (c.adam_step, c.adam_m, c.adam_v);
            (soft, opt, c.next_step)
        }
        Err(_) if !run.checkpoint_path().exists() => {
            let soft = learner::init_soft_prompts(
                config.prompts,
                config.tokens,
                d,
                config.seed,
                DType::F32,
                &device,
            )?;
            let opt = AdamW::new(adam_config(config), soft.as_tensor())?;
            (soft, opt, 0)
        }
        Err(e) => return Err(e),
    };
    run.truncate_metrics(start)?;
    let template = Template {
        prefix: config.prefix.clone(),
        suffix: config.suffix.clone(),
    };
    let frame = Frame::new(
        &sd.text_encoder,
        &sd.tokenizer,
        &template,
        config.tokens,
        config.position_mode,
    )?;
    on_event(FitEvent::Ready {
        images: n_images,
        crops: latents.crops_per_image,
        resolution,
        start_step: start,
    });

    let scale = sd.vae.config.scaling_factor;
    let train_steps = sd.schedule.num_train_timesteps();
    for step in start..config.steps {
        if stop.load(Ordering::SeqCst) {
            Checkpoint::capture(step, soft.as_tensor(), &opt).save(&run.checkpoint_path())?;
            return Ok(FitOutcome::Interrupted { next_step: step });
        }
        let began = Instant::now();
        let mut rng = step_rng(config.seed, step as u64);
        let chosen = rand::seq::index::sample(&mut rng, n_images, batch);
        let rows: Vec<u32> = chosen
            .iter()
            .map(|i| {
                (i * latents.crops_per_image + rng.random_range(0..latents.crops_per_image)) as u32
            })
            .collect();
        let rows = Tensor::new(rows, &device)?;
        let mean = latents.mean.index_select(&rows, 0)?;
        let std = latents
            .logvar
            .index_select(&rows, 0)?
            .affine(0.5, 0.0)?
            .exp()?;
        let x0 = ((mean
            + (std
                * randn(
                    &mut rng,
                    latents
                        .mean
                        .dims()
                        .split_first()
                        .map(|(_, r)| [&[batch][..], r].concat())
                        .unwrap()
                        .as_slice(),
                    dtype,
                    &device,
                )?)?)?
            * scale)?;
        let noise = randn(&mut rng, x0.dims(), dtype, &device)?;
        let timesteps: Vec<usize> = (0..batch)
            .map(|_| rng.random_range(0..train_steps))
            .collect();
        let eps = randn(
            &mut rng,
            &[batch * config.samples, crate::tokenizer::CONTEXT_LENGTH, d],
            dtype,
            &device,
        )?;

        let soft_in = soft.as_tensor().to_dtype(dtype)?;
        let batch = Batch {
            x0: &x0,
            noise: &noise,
            timesteps: &timesteps,
            eps: &eps,
        };
        let BatchLoss {
            loss,
            diffusion,
            orthogonality,
        } = batch_loss(sd, &frame, &soft_in, &batch, config)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let grads = loss.backward()?;
        let grad = grads
            .get(soft.as_tensor())
            .ok_or_else(|| Error::Input("no gradient reached the soft prompts".into()))?;
        let (grad, grad_norm) = clip_grad_norm(&grad.to_dtype(DType::F32)?, config.grad_clip)?;
        // The state before this step's update is the last good one if anything is non-finite.
        let before = Checkpoint::capture(step, &soft.as_tensor().copy()?, &opt);
        let mut update_ok = value.is_finite() && grad_norm.is_finite();
        if update_ok {
            opt.step(&soft, &grad)?;
            update_ok = soft
                .as_tensor()
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?
                .is_finite();
        }
        if !update_ok {
            let path = run.checkpoint_path();
            before.save(&path)?;
            return Err(Error::Input(format!(
                "the fit diverged at step {step} (loss {value}, gradient norm {grad_norm}); stopped with the last finite state in {} (resume with --resume {}); a lower --lr usually helps",
                path.display(),
                run.root.display()
            )));
        }

        let metrics = StepMetrics {
            step,
            loss: value,
            diffusion: diffusion.to_dtype(DType::F64)?.to_scalar()?,
            orthogonality: orthogonality.to_dtype(DType::F64)?.to_scalar()?,
            lr: config.lr,
            grad_norm,
            it_per_s: 1.0 / began.elapsed().as_secs_f64(),
        };
        run.append_metrics(&serde_json::to_value(&metrics).expect("metrics serialise"))?;
        on_event(FitEvent::Step(metrics));
        if (step + 1) % config.checkpoint_every == 0 || step + 1 == config.steps {
            Checkpoint::capture(step + 1, soft.as_tensor(), &opt).save(&run.checkpoint_path())?;
            on_event(FitEvent::Checkpoint {
                next_step: step + 1,
            });
        }
    }

    let distribution = distribution(sd, config, &frame, soft.as_tensor())?;
    distribution.save(&run.path(DISTRIBUTION_FILE))?;
    Ok(FitOutcome::Finished(distribution))
}

/// One training batch's randomness: clean latents (B × 4 × h × w), their noise and
/// timesteps, and the reparameterisation noise of the B·M conditionings (B·M × 77 × D).
pub struct Batch<'a> {
    pub x0: &'a Tensor,
    pub noise: &'a Tensor,
    pub timesteps: &'a [usize],
    pub eps: &'a Tensor,
}

/// What a fit step differentiates, and its two terms.
pub struct BatchLoss {
    /// diffusion + orthogonality_weight · orthogonality.
    pub loss: Tensor,
    pub diffusion: Tensor,
    pub orthogonality: Tensor,
}

/// The training objective for soft prompts `soft` (K × L × D) on one batch: the K prompts
/// through the text encoder, their Gaussian sampled with `batch.eps`, the Min-SNR-weighted
/// diffusion loss of the UNet under those conditionings, plus the weighted orthogonality loss.
pub fn batch_loss(
    sd: &StableDiffusion,
    frame: &Frame,
    soft: &Tensor,
    batch: &Batch,
    config: &FitConfig,
) -> Result<BatchLoss> {
    let enc = encode_with(
        &sd.text_encoder,
        frame,
        soft,
        config.text_encoder_checkpointing,
    )?;
    let (mu, sigma) = gaussian(&enc.hidden)?;
    let cond = reparameterize(&mu, &sigma, batch.eps)?;
    let diffusion = diffusion_loss(
        &sd.unet,
        &sd.schedule,
        batch.x0,
        batch.noise,
        batch.timesteps,
        &cond,
        config.min_snr_gamma,
    )?;
    let orthogonality = orthogonality_loss(&enc.pooled)?;
    let loss = (&diffusion + (&orthogonality * config.orthogonality_weight)?)?;
    Ok(BatchLoss {
        loss,
        diffusion,
        orthogonality,
    })
}

fn adam_config(config: &FitConfig) -> AdamWConfig {
    AdamWConfig {
        lr: config.lr,
        weight_decay: config.weight_decay,
        ..AdamWConfig::default()
    }
}

/// μ and σ of the K prompts encoded with the training template, and the file metadata.
fn distribution(
    sd: &StableDiffusion,
    config: &FitConfig,
    frame: &Frame,
    soft: &Tensor,
) -> Result<PromptDistribution> {
    let enc = encode(&sd.text_encoder, frame, &soft.detach().to_dtype(sd.dtype)?)?;
    let (mu, sigma) = gaussian(&enc.hidden)?;
    let text = &sd.text_encoder.config;
    Ok(PromptDistribution {
        soft_prompts: soft.detach(),
        mu,
        sigma,
        meta: DistributionMeta {
            format: "dream3d-prompt-distribution".into(),
            format_version: crate::prompt::distribution::FORMAT_VERSION,
            base_model: config.model.clone(),
            text_hidden_size: text.hidden_size,
            text_layers: text.num_hidden_layers,
            text_vocab: text.vocab_size,
            prediction_type: sd.schedule.prediction,
            prompts: config.prompts,
            tokens_per_prompt: config.tokens,
            prefix: config.prefix.clone(),
            suffix: config.suffix.clone(),
            position_mode: config.position_mode,
            steps: config.steps,
            seed: config.seed,
            dream3d_version: env!("CARGO_PKG_VERSION").into(),
        },
    })
}
