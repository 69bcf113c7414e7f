//! A tiny MVDream checkpoint in the official layout (LDM / OpenCLIP names), written by the
//! tests that load it: from the parity fixtures, or with random weights consistent with an
//! architecture in the official YAML format.

use super::uniform;
use candle_core::{DType, Device, Tensor};
use dream3d::models::AutoencoderKL;
use dream3d::mvdream::{MvdreamArchitecture, MvdreamModel};
use dream3d::weights::Weights;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// OpenCLIP's name for one of our text-encoder tensors (the inverse of the loader's map,
/// written out independently); q, k and v are packed by the caller.
pub fn openclip_name(ours: &str) -> String {
    let ours = ours.strip_prefix("text_model.").unwrap_or(ours);
    let fixed = [
        (
            "embeddings.token_embedding.weight",
            "token_embedding.weight",
        ),
        (
            "embeddings.position_embedding.weight",
            "positional_embedding",
        ),
        ("final_layer_norm.weight", "ln_final.weight"),
        ("final_layer_norm.bias", "ln_final.bias"),
    ];
    if let Some((_, theirs)) = fixed.iter().find(|(o, _)| *o == ours) {
        return theirs.to_string();
    }
    let rest = ours.strip_prefix("encoder.layers.").unwrap();
    let (i, sub) = rest.split_once('.').unwrap();
    let sub = sub
        .replace("self_attn.out_proj", "attn.out_proj")
        .replace("layer_norm1", "ln_1")
        .replace("layer_norm2", "ln_2")
        .replace("mlp.fc1", "mlp.c_fc")
        .replace("mlp.fc2", "mlp.c_proj");
    format!("transformer.resblocks.{i}.{sub}")
}

/// LDM's name for one of our VAE tensors, for a VAE of `levels` levels.
pub fn ldm_vae_name(ours: &str, levels: usize) -> String {
    let mut name = ours
        .replace("mid_block.resnets.0", "mid.block_1")
        .replace("mid_block.resnets.1", "mid.block_2")
        .replace("mid_block.attentions.0.group_norm", "mid.attn_1.norm")
        .replace("mid_block.attentions.0.to_q", "mid.attn_1.q")
        .replace("mid_block.attentions.0.to_k", "mid.attn_1.k")
        .replace("mid_block.attentions.0.to_v", "mid.attn_1.v")
        .replace("mid_block.attentions.0.to_out.0", "mid.attn_1.proj_out")
        .replace("conv_norm_out", "norm_out")
        .replace("conv_shortcut", "nin_shortcut")
        .replace("downsamplers.0", "downsample")
        .replace("upsamplers.0", "upsample")
        .replace(".resnets.", ".block.")
        .replace("encoder.down_blocks.", "encoder.down.");
    if let Some(rest) = name.strip_prefix("decoder.up_blocks.") {
        let (u, tail) = rest.split_once('.').unwrap();
        name = format!(
            "decoder.up.{}.{tail}",
            levels - 1 - u.parse::<usize>().unwrap()
        );
    }
    name
}

/// A tiny checkpoint in the official layout: MVDream's tiny UNet, sd_tiny's VAE and text
/// encoder renamed to LDM / OpenCLIP names, plus one unused extra text layer, the schedule
/// buffers, text projection and logit scale.
pub fn tiny_checkpoint() -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let mut out: HashMap<String, Tensor> = HashMap::new();
    for (k, t) in
        candle_core::safetensors::load(fixture("mvdream_tiny/weights.safetensors"), &dev).unwrap()
    {
        out.insert(format!("model.diffusion_model.{k}"), t);
    }
    let vae = candle_core::safetensors::load(
        fixture("sd_tiny/vae/diffusion_pytorch_model.safetensors"),
        &dev,
    )
    .unwrap();
    for (k, t) in vae {
        let k = k
            .replace(".query.", ".to_q.")
            .replace(".key.", ".to_k.")
            .replace(".value.", ".to_v.")
            .replace(".proj_attn.", ".to_out.0.");
        // LDM's attention projections are 1×1 convolutions.
        let t = if k.contains("attentions.0.to_") && t.rank() == 2 {
            t.unsqueeze(2).unwrap().unsqueeze(3).unwrap()
        } else {
            t
        };
        out.insert(format!("first_stage_model.{}", ldm_vae_name(&k, 2)), t);
    }
    let text =
        candle_core::safetensors::load(fixture("sd_tiny/text_encoder/model.safetensors"), &dev)
            .unwrap();
    let layers = 2;
    let mut packed: BTreeMap<(usize, String), [Option<Tensor>; 3]> = BTreeMap::new();
    for (k, t) in text {
        if k.contains("position_ids") {
            continue;
        }
        let bare = k.strip_prefix("text_model.").unwrap_or(&k).to_string();
        if let Some(i) = ["q_proj", "k_proj", "v_proj"]
            .iter()
            .position(|p| bare.contains(&format!("self_attn.{p}.")))
        {
            let layer: usize = bare.split('.').nth(2).unwrap().parse().unwrap();
            let kind = if bare.ends_with("weight") {
                "weight"
            } else {
                "bias"
            };
            packed.entry((layer, kind.to_string())).or_default()[i] = Some(t);
            continue;
        }
        out.insert(
            format!("cond_stage_model.model.{}", openclip_name(&bare)),
            t,
        );
    }
    for ((layer, kind), qkv) in packed {
        let parts: Vec<Tensor> = qkv.into_iter().map(Option::unwrap).collect();
        out.insert(
            format!("cond_stage_model.model.transformer.resblocks.{layer}.attn.in_proj_{kind}"),
            Tensor::cat(&parts, 0).unwrap(),
        );
    }
    // The last layer, which "penultimate" MVDream skips: a copy of layer 0 under its name.
    let extra: Vec<(String, Tensor)> = out
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix("cond_stage_model.model.transformer.resblocks.0.")
                .map(|rest| {
                    (
                        format!("cond_stage_model.model.transformer.resblocks.{layers}.{rest}"),
                        t.clone(),
                    )
                })
        })
        .collect();
    out.extend(extra);
    out.insert(
        "cond_stage_model.model.text_projection".into(),
        Tensor::zeros((8, 8), DType::F32, &dev).unwrap(),
    );
    out.insert(
        "cond_stage_model.model.logit_scale".into(),
        Tensor::new(4.6f32, &dev).unwrap(),
    );
    for b in ["betas", "alphas_cumprod", "alphas_cumprod_prev"] {
        out.insert(b.into(), Tensor::zeros(1000, DType::F32, &dev).unwrap());
    }
    out
}

/// Saves a checkpoint in the format its extension names: a PyTorch pickle (`.pt`, as the
/// official file) or safetensors.
pub fn save_checkpoint(tensors: &HashMap<String, Tensor>, path: &Path) {
    if path.extension().is_some_and(|e| e == "pt") {
        save_torch_pickle(tensors, path);
    } else {
        candle_core::safetensors::save(tensors, path).unwrap();
    }
}

/// Writes f32 `tensors` as `torch.save` does (checked once against `torch.load`): a zip
/// archive `<stem>/` holding `data.pkl`, the dict pickled with protocol 2 where each tensor is
/// `torch._utils._rebuild_tensor_v2` of the persistent storage
/// `('storage', torch.FloatStorage, key, 'cpu', numel)`, and each storage's raw
/// little-endian values under `data/<key>`.
pub fn save_torch_pickle(tensors: &HashMap<String, Tensor>, path: &Path) {
    use std::io::Write;
    fn unicode(out: &mut Vec<u8>, s: &str) {
        out.push(b'X');
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
    }
    fn global(out: &mut Vec<u8>, module: &str, name: &str) {
        out.push(b'c');
        out.extend(format!("{module}\n{name}\n").as_bytes());
    }
    // The smallest integer opcode, as pickle picks it.
    fn int(out: &mut Vec<u8>, v: usize) {
        match v {
            0..=0xff => out.extend([b'K', v as u8]),
            0x100..=0xffff => {
                out.push(b'M');
                out.extend((v as u16).to_le_bytes());
            }
            _ => {
                out.push(b'J');
                out.extend(i32::try_from(v).unwrap().to_le_bytes());
            }
        }
    }
    fn tuple(out: &mut Vec<u8>, values: &[usize]) {
        out.push(b'(');
        for &v in values {
            int(out, v);
        }
        out.push(b't');
    }
    let sorted: BTreeMap<&String, Tensor> = tensors
        .iter()
        .map(|(k, t)| (k, t.contiguous().unwrap()))
        .collect();
    let entries: Vec<(&String, Tensor)> = sorted.into_iter().collect();
    let mut pkl = vec![0x80, 2, b'}'];
    // Pickle sets dict items in batches of 1000.
    for (batch, chunk) in entries.chunks(1000).enumerate() {
        pkl.push(b'(');
        for (i, (name, t)) in chunk.iter().enumerate() {
            unicode(&mut pkl, name);
            global(&mut pkl, "torch._utils", "_rebuild_tensor_v2");
            pkl.push(b'(');
            pkl.push(b'(');
            unicode(&mut pkl, "storage");
            global(&mut pkl, "torch", "FloatStorage");
            unicode(&mut pkl, &(batch * 1000 + i).to_string());
            unicode(&mut pkl, "cpu");
            int(&mut pkl, t.elem_count());
            pkl.extend([b't', b'Q']);
            int(&mut pkl, 0);
            tuple(&mut pkl, t.dims());
            tuple(&mut pkl, t.stride());
            pkl.push(0x89);
            global(&mut pkl, "collections", "OrderedDict");
            pkl.extend([b')', b'R', b't', b'R']);
        }
        pkl.push(b'u');
    }
    pkl.push(b'.');

    let archive = path.file_stem().unwrap().to_str().unwrap();
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let mut record = |name: String, bytes: &[u8]| {
        zip.start_file(format!("{archive}/{name}"), stored).unwrap();
        zip.write_all(bytes).unwrap();
    };
    record("data.pkl".into(), &pkl);
    record("byteorder".into(), b"little");
    for (key, (_, t)) in entries.iter().enumerate() {
        let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        record(format!("data/{key}"), &bytes);
    }
    record("version".into(), b"3\n");
    zip.finish().unwrap();
}

/// Random OpenCLIP text-tower tensors (`layers` + 1 blocks, the last unused), width `d`.
pub fn random_text_tower(d: usize, layers: usize) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    let mut seed = 0;
    let mut put = |name: String, shape: &[usize]| {
        seed += 1;
        let t = (uniform(shape, seed, DType::F32) * 0.2).unwrap();
        out.insert(format!("cond_stage_model.model.{name}"), t);
    };
    put("token_embedding.weight".into(), &[49408, d]);
    put("positional_embedding".into(), &[77, d]);
    put("ln_final.weight".into(), &[d]);
    put("ln_final.bias".into(), &[d]);
    put("text_projection".into(), &[d, d]);
    put("logit_scale".into(), &[]);
    for i in 0..=layers {
        let b = format!("transformer.resblocks.{i}");
        put(format!("{b}.attn.in_proj_weight"), &[3 * d, d]);
        put(format!("{b}.attn.in_proj_bias"), &[3 * d]);
        put(format!("{b}.attn.out_proj.weight"), &[d, d]);
        put(format!("{b}.attn.out_proj.bias"), &[d]);
        for n in ["ln_1", "ln_2"] {
            put(format!("{b}.{n}.weight"), &[d]);
            put(format!("{b}.{n}.bias"), &[d]);
        }
        put(format!("{b}.mlp.c_fc.weight"), &[4 * d, d]);
        put(format!("{b}.mlp.c_fc.bias"), &[4 * d]);
        put(format!("{b}.mlp.c_proj.weight"), &[d, 4 * d]);
        put(format!("{b}.mlp.c_proj.bias"), &[d]);
    }
    out
}

pub const TINY_YAML: &str = r#"model:
  target: mvdream.ldm.interface.LatentDiffusionInterface
  params:
    scale_factor: 0.18215
    unet_config:
      target: mvdream.ldm.modules.diffusionmodules.openaimodel.MultiViewUNetModel
      params:
        image_size: 16
        in_channels: 4
        out_channels: 4
        model_channels: 32
        attention_resolutions: [1, 2]
        num_res_blocks: 1
        channel_mult: [1, 1, 2]
        num_head_channels: 8
        use_spatial_transformer: true
        use_linear_in_transformer: true
        transformer_depth: 1
        context_dim: 32
        use_checkpoint: false
        legacy: false
        camera_dim: 16
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        ddconfig:
          double_z: true
          z_channels: 4
          resolution: 32
          in_channels: 3
          out_ch: 3
          ch: 32
          ch_mult: [1, 2]
          num_res_blocks: 1
          attn_resolutions: []
          dropout: 0.0
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder
      params:
        arch: tiny-text
        layer: penultimate
"#;

/// open_clip's model config of TINY_YAML's text tower `tiny-text`.
pub const TINY_TEXT_JSON: &str = r#"{"embed_dim": 32, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 3}}"#;

/// A checkpoint of TINY_YAML's architecture `arch`: MVDream's tiny UNet, a random LDM VAE and a
/// random OpenCLIP text tower as wide as the UNet's context.
pub fn consistent_tiny(arch: &MvdreamArchitecture) -> HashMap<String, Tensor> {
    consistent_tiny_with_text(arch, random_text_tower(arch.unet.context_dim, 2))
}

/// [`consistent_tiny`] with the given text tower (OpenCLIP names); the UNet's cross-attention
/// keys and values are re-drawn for its width when it differs from the fixture's 32.
pub fn consistent_tiny_with_text(
    arch: &MvdreamArchitecture,
    text: HashMap<String, Tensor>,
) -> HashMap<String, Tensor> {
    assert_eq!(arch.text.num_hidden_layers, 2, "penultimate layer of 3");
    let mut tensors = tiny_checkpoint();
    tensors
        .retain(|k, _| !k.starts_with("cond_stage_model.") && !k.starts_with("first_stage_model."));
    let context = arch.unet.context_dim;
    let mut seed = 100;
    for (k, t) in tensors.iter_mut() {
        let projects_context = k.ends_with("attn2.to_k.weight") || k.ends_with("attn2.to_v.weight");
        if projects_context && t.dim(1).unwrap() != context {
            seed += 1;
            let rows = t.dim(0).unwrap();
            *t = (uniform(&[rows, context], seed, DType::F32) * 0.2).unwrap();
        }
    }
    tensors.extend(text);
    // LDM's VAE always normalises over 32 groups: a random one of that architecture, under
    // LDM names.
    let w = Weights::random(7, DType::F32, &Device::Cpu);
    AutoencoderKL::load(arch.vae.clone(), &w).unwrap();
    for (k, t) in w.tensors() {
        let t = if k.contains("attentions.0.to_") && t.rank() == 2 {
            t.unsqueeze(2).unwrap().unsqueeze(3).unwrap()
        } else {
            t
        };
        let levels = arch.vae.block_out_channels.len();
        tensors.insert(format!("first_stage_model.{}", ldm_vae_name(&k, levels)), t);
    }
    tensors
}

/// `dir/<checkpoint>` (safetensors or `.pt`) of [`consistent_tiny`], with its YAML (same
/// stem) and `tiny-text.json` beside it.
pub fn write_consistent_tiny(dir: &Path, checkpoint: &str) {
    let path = dir.join(checkpoint);
    let yaml = path.with_extension("yaml");
    std::fs::write(&yaml, TINY_YAML).unwrap();
    std::fs::write(dir.join("tiny-text.json"), TINY_TEXT_JSON).unwrap();
    let arch = MvdreamArchitecture::from_yaml(&yaml, &path).unwrap();
    save_checkpoint(&consistent_tiny(&arch), &path);
}

/// `dir/<checkpoint>`: a tiny MVDream whose text tower is sd_tiny's own text encoder (width 8,
/// as MVDream shares SD 2.1's), so distributions fitted on sd_tiny condition it, and whose VAE
/// downsamples 8× like the real one (generate's default 256² model input then gives the real
/// 32² latents); with its YAML and open_clip config beside it.
pub fn write_sd_tiny_companion(dir: &Path, checkpoint: &str) {
    let path = dir.join(checkpoint);
    let yaml = path.with_extension("yaml");
    let config = TINY_YAML
        .replace("context_dim: 32", "context_dim: 8")
        .replace("ch_mult: [1, 2]", "ch_mult: [1, 1, 1, 1]");
    std::fs::write(&yaml, config).unwrap();
    std::fs::write(
        dir.join("tiny-text.json"),
        r#"{"embed_dim": 8, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 8, "heads": 2, "layers": 3}}"#,
    )
    .unwrap();
    let arch = MvdreamArchitecture::from_yaml(&yaml, &path).unwrap();
    let text = tiny_checkpoint()
        .into_iter()
        .filter(|(k, _)| k.starts_with("cond_stage_model."))
        .collect();
    save_checkpoint(&consistent_tiny_with_text(&arch, text), &path);
}

/// [`write_consistent_tiny`]'s `dir/tiny-4view.safetensors`, loaded.
pub fn load_consistent_tiny(dir: &Path) -> MvdreamModel {
    write_consistent_tiny(dir, "tiny-4view.safetensors");
    let path = dir.join("tiny-4view.safetensors");
    let arch = MvdreamArchitecture::from_yaml(&dir.join("tiny-4view.yaml"), &path).unwrap();
    MvdreamModel::load(&path, &arch, DType::F32, &Device::Cpu).unwrap()
}

/// A small, fast `generate` configuration: 64² renders of a small field with a neural
/// background (augmented half of the time), 32² model input; no mesh stage unless a test asks
/// for one with `--refine-steps`, then on a 16-cell grid.
pub const GENERATE_TOML: &str = r#"
checkpoint_every = 5
validate_every = 10

[distill]
steps = 30
image_size = 32
samples_per_ray = 48

[distill.stages]
milestones = []
sizes = [64]
batch = [4]

[distill.field]
levels = 4
log2_table_size = 12
base_resolution = 4
per_level_scale = 2.0
hidden = 16
background = { neural = { hidden = 8 } }

[refine]
geometry_steps = 0
texture_steps = 0
resolution = 16
threshold = 5.0
image_size = 64
"#;
