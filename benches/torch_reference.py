#!/usr/bin/env python3
"""PyTorch/diffusers reference timings for the workloads dream3d benchmarks.

Models are built from the SD 2.1-base configs with random weights (nothing is
downloaded), run in fp32 on the CPU with 2 threads. Each workload runs in its
own subprocess so that the peak RSS it reports is its own, not the high-water
mark of whatever ran before it in the same interpreter.

    .venv-ref/bin/python benches/torch_reference.py --json bench-out/torch.json
    .venv-ref/bin/python benches/torch_reference.py --only unet_fwd --reps 5 --json out.json
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

# There is no network here; make any accidental hub access fail at once instead
# of retrying. Must be set before diffusers/transformers are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

NUM_THREADS = 2


def sd21_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=(
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=(
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ),
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=(5, 10, 20, 20),
        cross_attention_dim=1024,
        use_linear_projection=True,
        norm_num_groups=32,
    )


def sd21_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=1024,
            num_attention_heads=16,
            num_hidden_layers=23,
            intermediate_size=4096,
            hidden_act="gelu",
            max_position_embeddings=77,
            layer_norm_eps=1e-5,
        )
    )


def sd21_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
    )


def frozen(model):
    # Gradients flow only to the inputs, as in score distillation: the weights
    # never need a .grad, so don't pay for one.
    return model.eval().requires_grad_(False)


# Each setup builds its model and inputs, and returns the closure to time.


def setup_unet_fwd():
    unet = frozen(sd21_unet())
    latents = torch.randn(2, 4, 32, 32)
    timesteps = torch.tensor([751, 1])
    context = torch.randn(2, 77, 1024)

    def step():
        with torch.no_grad():
            unet(latents, timesteps, encoder_hidden_states=context)

    return step


def setup_unet_fwd_b8():
    """MVDream's sampling shape: 4 views x (uncond, cond), 32x32 latents (diffusers has no
    multi-view attention: this is the same UNet in 2-D mode, the reference cost)."""
    unet = frozen(sd21_unet())
    latents = torch.randn(8, 4, 32, 32)
    timesteps = torch.full((8,), 501)
    context = torch.randn(8, 77, 1024)

    def step():
        with torch.no_grad():
            unet(latents, timesteps, encoder_hidden_states=context)

    return step


def setup_unet_fwd_bwd():
    unet = frozen(sd21_unet())
    latents = torch.randn(1, 4, 32, 32)
    timesteps = torch.tensor([751])
    context = torch.randn(1, 77, 1024, requires_grad=True)

    def step():
        context.grad = None
        out = unet(latents, timesteps, encoder_hidden_states=context).sample
        out.square().mean().backward()

    return step


def setup_clip_fwd():
    encoder = frozen(sd21_text_encoder())
    ids = torch.randint(0, 49408, (8, 77))

    def step():
        with torch.no_grad():
            encoder(input_ids=ids)

    return step


def setup_vae_enc_fwd_bwd():
    vae = frozen(sd21_vae())
    images = torch.randn(4, 3, 256, 256, requires_grad=True)

    def step():
        images.grad = None
        vae.encode(images).latent_dist.mean.square().mean().backward()

    return step


WORKLOADS = {
    "unet_fwd": setup_unet_fwd,
    "unet_fwd_bwd": setup_unet_fwd_bwd,
    "unet_fwd_b8": setup_unet_fwd_b8,
    "clip_fwd": setup_clip_fwd,
    "vae_enc_fwd_bwd": setup_vae_enc_fwd_bwd,
}


def run_child(name, reps, out_path):
    """Runs one workload in this (fresh) process and writes its result."""
    torch.set_num_threads(NUM_THREADS)
    torch.manual_seed(0)
    step = WORKLOADS[name]()
    step()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    # ru_maxrss is in KiB on Linux.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {"median_s": statistics.median(times), "times_s": times, "peak_rss_bytes": peak}
    with open(out_path, "w") as f:
        json.dump(result, f)


def run_in_subprocess(name, reps, script=__file__):
    """Times workload `name` in a fresh `script --child name` process (a script that registers
    further workloads passes itself)."""
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "result.json")
        cmd = [sys.executable, os.path.abspath(script), "--child", name,
               "--reps", str(reps), "--json", out_path]
        subprocess.run(cmd, check=True)
        with open(out_path) as f:
            return json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions after 1 warm-up")
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), metavar="NAME",
                        help=f"workloads to run (default: all of {', '.join(WORKLOADS)})")
    parser.add_argument("--json", required=True, metavar="OUT.json", help="where to write results")
    parser.add_argument("--child", choices=list(WORKLOADS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reps < 1:
        parser.error("--reps must be at least 1")

    if args.child:
        run_child(args.child, args.reps, args.json)
        return

    results = {}
    for name in args.only or WORKLOADS:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = run_in_subprocess(name, args.reps)

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)

    print(f"torch {torch.__version__}, fp32, CPU, {NUM_THREADS} threads, median of {args.reps}")
    print(f"{'workload':<18}{'median s':>10}{'peak RSS GB':>13}")
    for name, r in results.items():
        print(f"{name:<18}{r['median_s']:>10.3f}{r['peak_rss_bytes'] / 1e9:>13.2f}")


if __name__ == "__main__":
    main()
