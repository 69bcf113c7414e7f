//! `dream3d info`: what a model is and where its files are.

use super::ModelArgs;
use anyhow::Context;
use clap::Args;
use dream3d::stable_diffusion::StableDiffusion;

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let name = args
        .model
        .model
        .as_deref()
        .unwrap_or("stabilityai/stable-diffusion-2-1-base");
    let files = args.model.lookup().resolve(name)?;
    let device = dream3d::device::best_device()?;
    let dtype = dream3d::device::default_dtype(&device);
    let sd = StableDiffusion::load(files, dtype, &device)
        .with_context(|| format!("loading model `{name}`"))?;
    let f = &sd.files;
    let p = &sd.parameters;
    let millions = |n: usize| n as f64 / 1e6;
    println!("model        {}", f.name);
    println!("folder       {}", f.root.display());
    println!("device       {device:?}, computing in {dtype:?}");

    let te = &sd.text_encoder.config;
    println!("\ntext encoder {}", f.text_encoder.weights.display());
    println!(
        "  {} layers, width {}, {} heads, MLP {}, {}, vocab {}, {} positions",
        te.num_hidden_layers,
        te.hidden_size,
        te.num_attention_heads,
        te.intermediate_size,
        te.hidden_act,
        te.vocab_size,
        te.max_position_embeddings
    );
    println!(
        "  {:.1} M parameters stored as {:?}",
        millions(p.text_encoder.parameters),
        p.text_encoder.stored_dtype
    );

    let u = &sd.unet.config;
    println!("\nunet         {}", f.unet.weights.display());
    println!(
        "  channels {:?}, {} resnets per block, heads {:?}, transformer depth {:?}",
        u.block_out_channels, u.layers_per_block, sd.unet.layout.heads, sd.unet.layout.depth
    );
    println!(
        "  down {:?}\n  up {:?}\n  cross-attention dim {}, {} projection",
        u.down_block_types,
        u.up_block_types,
        u.cross_attention_dim,
        if u.use_linear_projection {
            "linear"
        } else {
            "1×1 conv"
        }
    );
    println!(
        "  {:.1} M parameters stored as {:?}",
        millions(p.unet.parameters),
        p.unet.stored_dtype
    );

    let v = &sd.vae.config;
    println!("\nvae          {}", f.vae.weights.display());
    println!(
        "  channels {:?}, {} latent channels, ×{} downscale, scaling factor {}",
        v.block_out_channels,
        v.latent_channels,
        v.downscale(),
        v.scaling_factor
    );
    println!(
        "  {:.1} M parameters stored as {:?}",
        millions(p.vae.parameters),
        p.vae.stored_dtype
    );

    let s = &sd.schedule;
    println!("\nscheduler    {}", f.scheduler_config.display());
    println!(
        "  {:?} prediction, {} training steps, {:?} spacing, steps offset {}",
        s.prediction,
        s.num_train_timesteps(),
        s.spacing,
        s.steps_offset
    );
    match sd.resolution() {
        Some(r) => println!("  resolution {r}×{r} px"),
        None => println!("  resolution unknown (unet config has no sample_size)"),
    }
    println!(
        "\ntokenizer    {}",
        f.tokenizer_dir
            .as_ref()
            .map_or("bundled CLIP BPE".to_string(), |d| d.display().to_string())
    );
    Ok(())
}
