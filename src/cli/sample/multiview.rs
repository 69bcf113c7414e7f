//! `dream3d sample --mvdream`: MVDream 4-view previews of an object, the look users check
//! before a long 3D job.

use super::sidecar::absolute_if_local;
use candle_core::{DType, Device, Tensor};
use clap::Args;
use dream3d::camera::{mvdream_camera_tensor, mvdream_cameras};

/// MVDream's hub repository and the checkpoint `--mvdream` loads by default.
pub const DEFAULT_MODEL: &str = "MVDream/MVDream";

/// What the official MVDream script appends to a plain prompt.
const ASSET_SUFFIX: &str = ", 3d asset";

#[derive(Args, Clone)]
pub struct MultiViewArgs {
    /// Sample views of one object with MVDream: a checkpoint file, a folder holding
    /// sd-v2.1-base-4view.{safetensors,pt}, or a hub repo id [MVDream/MVDream].
    #[arg(long, num_args = 0..=1, default_missing_value = DEFAULT_MODEL, value_name = "MODEL")]
    pub mvdream: Option<String>,
    /// MVDream architecture in the official YAML format [the checkpoint's stem + .yaml beside
    /// it, else sd-v2-base.yaml's].
    #[arg(long, value_name = "FILE.yaml")]
    pub mvdream_config: Option<std::path::PathBuf>,
    /// Views per object (MVDream was trained with 4).
    #[arg(long, default_value_t = 4)]
    pub views: usize,
    /// Camera elevation in degrees.
    #[arg(long, default_value_t = 15.0)]
    pub elevation: f64,
    /// Azimuth of the first view in degrees (MVDream's convention; the official script's 90).
    #[arg(long, default_value_t = 90.0)]
    pub azimuth: f64,
    /// Do not append ", 3d asset" to a plain --prompt (the official script appends it; a prompt
    /// that already ends with it keeps one).
    #[arg(long)]
    pub no_asset_suffix: bool,
}

/// MVDream named by `--mvdream` (and `--mvdream-config`), saying where it was found.
pub fn load_mvdream(
    lookup: &dream3d::weights::Lookup,
    name: &str,
    config: Option<&std::path::Path>,
    dtype: DType,
    device: &Device,
) -> anyhow::Result<dream3d::mvdream::MvdreamModel> {
    use anyhow::Context;
    let loaded = dream3d::mvdream::MvdreamModel::load_named(lookup, name, config, dtype, device)
        .with_context(|| format!("loading MVDream {name}"))?;
    eprintln!("MVDream checkpoint: {}", loaded.checkpoint.display());
    if let Some(yaml) = loaded.yaml {
        eprintln!("MVDream architecture: {}", yaml.display());
    }
    Ok(loaded.model)
}

/// Resolution of MVDream's previews (the official script's 256 px).
pub const RESOLUTION: usize = 256;

impl MultiViewArgs {
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.mvdream.is_none() || self.views == 4,
            "--views {}: MVDream was trained on 4 views of an object; use --views 4",
            self.views
        );
        Ok(())
    }

    /// The views' cameras (views × 16), MVDream's `get_camera`.
    pub fn cameras(&self, device: &Device) -> candle_core::Result<Tensor> {
        let cameras = mvdream_cameras(self.views, self.elevation, self.azimuth, 360.0, true);
        mvdream_camera_tensor(&cameras, device)
    }

    /// The prompt MVDream sees for a plain `--prompt`: the official suffix, once.
    pub fn prompt(&self, prompt: &str) -> String {
        if self.no_asset_suffix || prompt.trim_end().ends_with(ASSET_SUFFIX) {
            prompt.to_string()
        } else {
            format!("{prompt}{ASSET_SUFFIX}")
        }
    }

    /// Flags that reproduce these settings.
    pub fn flags(&self) -> Vec<String> {
        let Some(model) = &self.mvdream else {
            return vec![];
        };
        let config = self.mvdream_config.iter().flat_map(|c| {
            [
                "--mvdream-config".to_string(),
                absolute_if_local(&c.to_string_lossy()),
            ]
        });
        let mut f: Vec<String> = [
            ("--mvdream", absolute_if_local(model)),
            ("--views", self.views.to_string()),
            ("--elevation", self.elevation.to_string()),
            ("--azimuth", self.azimuth.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .chain(config)
        .collect();
        if self.no_asset_suffix {
            f.push("--no-asset-suffix".into());
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::MultiViewArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        multiview: MultiViewArgs,
    }

    #[test]
    fn the_asset_suffix_is_appended_once() {
        let args = |flags: &[&str]| {
            Flags::parse_from(std::iter::once("sample").chain(flags.iter().copied())).multiview
        };
        let official = args(&[]);
        assert_eq!(official.prompt("a chair"), "a chair, 3d asset");
        assert_eq!(official.prompt("a chair, 3d asset"), "a chair, 3d asset");
        assert_eq!(official.prompt("a chair, 3d asset "), "a chair, 3d asset ");
        assert_eq!(args(&["--no-asset-suffix"]).prompt("a chair"), "a chair");
    }
}
