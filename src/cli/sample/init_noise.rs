//! `--init-noise FILE.safetensors[:TENSOR]`: initial latents supplied by the user, like
//! diffusers' `latents=` argument.

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use std::path::Path;

pub struct InitNoise {
    /// The argument with its file made absolute (recorded in the sidecar).
    pub spec: String,
    tensor: Tensor,
    /// Images per object.
    views: usize,
}

impl InitNoise {
    /// Reads the tensor: the one named after `:`, else the file's only tensor, else `latents`.
    pub fn read(spec: &str, views: usize) -> anyhow::Result<Self> {
        let (path, name) = match spec.rsplit_once(':') {
            Some((file, name)) if !Path::new(spec).is_file() => (Path::new(file), Some(name)),
            _ => (Path::new(spec), None),
        };
        let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("--init-noise: reading {}", path.display()))?;
        let mut names: Vec<String> = tensors.keys().cloned().collect();
        names.sort();
        let chosen = match name {
            Some(n) => n.to_string(),
            None if names.len() == 1 => names[0].clone(),
            None if tensors.contains_key("latents") => "latents".into(),
            None => bail!(
                "--init-noise: {} holds {} tensors ({}); pick one with {}:NAME",
                path.display(),
                names.len(),
                names.join(", "),
                path.display()
            ),
        };
        let tensor = tensors.remove(&chosen).with_context(|| {
            format!(
                "--init-noise: {} has no tensor `{chosen}` (it has {})",
                path.display(),
                names.join(", ")
            )
        })?;
        let file = super::sidecar::absolute_if_local(&path.to_string_lossy());
        Ok(Self {
            spec: match name {
                Some(n) => format!("{file}:{n}"),
                None => file,
            },
            tensor,
            views,
        })
    }

    /// One object's latents shared by every object (`views` rows).
    pub fn shared(&self) -> bool {
        self.tensor.dim(0).is_ok_and(|n| n == self.views)
    }

    /// The views × C × h × w latents of each of `objects` objects (one view each for Stable
    /// Diffusion), after checking the shape.
    pub fn rows(&self, objects: usize, latent: [usize; 3]) -> anyhow::Result<Vec<Tensor>> {
        let views = self.views;
        let dims = self.tensor.dims();
        let rows_ok = dims
            .first()
            .is_some_and(|&n| n == objects * views || n == views);
        if dims.len() != 4 || !rows_ok || dims[1..] != latent {
            let n = objects * views;
            bail!(
                "--init-noise {}: shape {dims:?}, but {n} image(s) at this size need [{n}, {}, {}, {}] (or [{views}, …] shared by all); the latent size is the image size divided by the VAE downscale factor (8 for Stable Diffusion)",
                self.spec,
                latent[0],
                latent[1],
                latent[2]
            );
        }
        let shared = dims[0] == views;
        (0..objects)
            .map(|i| {
                Ok(self
                    .tensor
                    .narrow(0, if shared { 0 } else { i * views }, views)?)
            })
            .collect()
    }
}
