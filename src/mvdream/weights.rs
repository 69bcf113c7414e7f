//! Official MVDream UNet tensors (LDM names) renamed to ours and loaded strictly.

use super::MvUNetParams;
use crate::error::Result;
use crate::models::UNet2DConditionModel;
use crate::weights::Weights;
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

use super::keys::UNET_PREFIX;

/// Our names for the UNet tensors among `tensors` (LDM names, with or without the
/// `model.diffusion_model.` prefix). Names the UNet does not know are kept unchanged, so that
/// strict loading reports them.
pub fn rename_unet(
    params: &MvUNetParams,
    tensors: BTreeMap<String, Tensor>,
) -> BTreeMap<String, Tensor> {
    let shape = params.ldm_shape();
    tensors
        .into_iter()
        .map(|(name, t)| {
            let bare = name.strip_prefix(UNET_PREFIX).unwrap_or(&name);
            (shape.diffusers_key(bare).unwrap_or(name), t)
        })
        .collect()
}

/// The multi-view UNet from LDM-named tensors: every expected tensor present with its shape,
/// none left over.
pub fn load_unet(
    params: &MvUNetParams,
    tensors: BTreeMap<String, Tensor>,
    source: &Path,
    dtype: DType,
    device: &Device,
) -> Result<(UNet2DConditionModel, Weights)> {
    let converted = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_device(device)?.to_dtype(dtype)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    let weights = Weights::from_tensors(source, rename_unet(params, converted));
    let (config, layout) = params.unet_config(source)?;
    let unet = UNet2DConditionModel::load(config, layout, &weights)?;
    weights.check_all_used()?;
    Ok((unet, weights))
}
