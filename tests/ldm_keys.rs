//! LDM UNet names (Stable Diffusion / MVDream single-file checkpoints) map to ours exactly as
//! diffusers' own single-file converter maps them (tables in tests/fixtures, see their README).

use dream3d::weights::ldm_unet::LdmUNetShape;
use std::path::PathBuf;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn check(shape: &LdmUNetShape, pairs: &[(String, String)]) {
    for (ldm, diffusers) in pairs {
        assert_eq!(
            shape.diffusers_key(ldm).as_deref(),
            Some(diffusers.as_str()),
            "{ldm}"
        );
    }
}

#[test]
fn full_size_sd21_keys_map_like_diffusers() {
    let pairs: Vec<(String, String)> = fixture("real_ldm_to_diffusers_unet_keys.tsv")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|c| !c[0].starts_with("camera_embed"))
        .map(|c| (c[0].to_string(), c[1].to_string()))
        .collect();
    assert_eq!(pairs.len(), 686);
    let shape = LdmUNetShape {
        levels: 4,
        res_blocks: 2,
        attention: vec![true, true, true, false],
    };
    check(&shape, &pairs);
    assert_eq!(
        shape.diffusers_key("camera_embed.2.weight").as_deref(),
        Some("camera_embed.2.weight")
    );
    for foreign in [
        "input_blocks.12.0.op.weight",
        "output_blocks.12.0.in_layers.0.weight",
        "betas",
    ] {
        assert_eq!(shape.diffusers_key(foreign), None, "{foreign}");
    }
}

#[test]
fn tiny_mvdream_keys_map_like_diffusers() {
    let table: serde_json::Value = serde_json::from_str(&fixture(
        "mvdream_tiny/ldm_to_diffusers_unet_keys_tiny.json",
    ))
    .unwrap();
    let pairs: Vec<(String, String)> = table["mapping"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    // Every UNet tensor of the tiny model: an empty or truncated table must not pass.
    assert_eq!(pairs.len(), 324);
    let shape = LdmUNetShape {
        levels: 3,
        res_blocks: 1,
        attention: vec![true, true, false],
    };
    check(&shape, &pairs);
}
