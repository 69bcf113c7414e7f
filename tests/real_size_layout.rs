//! The networks built from SD 2.1-base's configs ask for exactly the tensors (names and shapes)
//! that the real checkpoints hold, and the published parameter counts follow.

use dream3d::models::{
    AutoencoderKL, ClipTextConfig, ClipTextModel, UNet2DConditionModel, UNetConfig, VaeConfig,
};
use dream3d::weights::Weights;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn config(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets/configs/sd21-base")
        .join(name)
}

fn layout(w: &Weights) -> BTreeMap<String, Vec<usize>> {
    w.tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dims().to_vec()))
        .collect()
}

#[test]
fn unet_matches_the_diffusers_sd21_base_layout() {
    // From diffusers' own single-file converter, with the shapes of a diffusers
    // UNet2DConditionModel built from the SD 2.1-base config (see the fixture's README).
    let tsv = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/real_ldm_to_diffusers_unet_keys.tsv"),
    )
    .unwrap();
    let expected: BTreeMap<String, Vec<usize>> = tsv
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let shape: Vec<usize> = serde_json::from_str(cols[2]).unwrap();
            (!cols[1].is_empty() && !cols[0].starts_with("camera_embed"))
                .then(|| (cols[1].to_string(), shape))
        })
        .collect();
    assert_eq!(expected.len(), 686);

    let (c, l) = UNetConfig::load(&config("unet.json")).unwrap();
    let w = Weights::placeholder();
    UNet2DConditionModel::load(c, l, &w).unwrap();
    let ours = layout(&w);
    let missing: Vec<_> = expected.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}"
    );
    for (k, shape) in &expected {
        assert_eq!(&ours[k], shape, "{k}");
    }
    assert_eq!(w.used_parameter_count(), 865_910_724);
}

#[test]
fn text_encoder_and_vae_have_the_published_sizes() {
    let path = config("text_encoder.json");
    let w = Weights::placeholder();
    ClipTextModel::load(ClipTextConfig::load(&path).unwrap(), &path, &w).unwrap();
    // OpenCLIP ViT-H/14's text tower without its last block, projection and logit scale.
    assert_eq!(w.used_parameter_count(), 340_387_840);
    // Generated weights take the unprefixed (transformers ≥ 5) names.
    assert_eq!(layout(&w)["encoder.layers.22.mlp.fc1.weight"], [4096, 1024]);

    let w = Weights::placeholder();
    AutoencoderKL::load(VaeConfig::load(&config("vae.json")).unwrap(), &w).unwrap();
    assert_eq!(w.used_parameter_count(), 83_653_863);
}
