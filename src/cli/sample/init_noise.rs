//! `--init-noise FILE.safetensors[:TENSOR]`: initial latents supplied by the user, like
//! diffusers' `latents=` argument.

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use std::path::Path;

pub struct InitNoise {
    /// The argument as given (recorded in the sidecar).
    pub spec: String,
    tensor: Tensor,
}

impl InitNoise {
    /// Reads the tensor: the one named after `:`, else the file's only tensor, else `latents`.
    pub fn read(spec: &str) -> anyhow::Result<Self> {
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
        Ok(Self {
            spec: spec.to_string(),
            tensor,
        })
    }

    /// One row shared by every image.
    pub fn shared(&self) -> bool {
        self.tensor.dim(0).is_ok_and(|n| n == 1)
    }

    /// The C × h × w latents of each of `images` images, after checking the shape.
    pub fn rows(&self, images: usize, latent: [usize; 3]) -> anyhow::Result<Vec<Tensor>> {
        let dims = self.tensor.dims();
        let rows_ok = dims.first().is_some_and(|&n| n == images || n == 1);
        if dims.len() != 4 || !rows_ok || dims[1..] != latent {
            bail!(
                "--init-noise {}: shape {dims:?}, but {images} image(s) at this size need [{images}, {}, {}, {}] (or [1, …] shared by all); the latent size is the image size divided by the VAE downscale factor (8 for Stable Diffusion)",
                self.spec,
                latent[0],
                latent[1],
                latent[2]
            );
        }
        (0..images)
            .map(|i| Ok(self.tensor.get(if self.shared() { 0 } else { i })?))
            .collect()
    }
}
