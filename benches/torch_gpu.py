#!/usr/bin/env python3
"""PyTorch/diffusers on a CUDA GPU, fp16, for the GPU rows of BENCHMARKS.md: the SD 2.1-base
UNet forward at MVDream's sampling shape (batch 8, 32x32 latents; diffusers has no multi-view
attention, so this is the 2-D UNet at the same shapes), and text-to-image sampling with the
StableDiffusionPipeline (DDIM, CFG 7.5, batch 1) from the random-weight folder that
`torch_sample.py --make` writes and dream3d loads too. Times are medians after one warm-up,
with the device synchronised; benches/device_models.sh runs it beside dream3d.

    python3 benches/torch_gpu.py unet --reps 5 --json out/torch_unet_b8.json
    python3 benches/torch_gpu.py sample --model DIR --size 512 --steps 20 --json out/t512.json
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import torch_reference


def timed(step, reps):
    step()  # warm-up: kernel selection, allocations
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "times_s": times,
        "peak_allocated_bytes": torch.cuda.max_memory_allocated(),
    }


def unet(reps):
    model = torch_reference.frozen(torch_reference.sd21_unet()).to("cuda", torch.float16)
    latents = torch.randn(8, 4, 32, 32, device="cuda", dtype=torch.float16)
    timesteps = torch.full((8,), 501, device="cuda")
    context = torch.randn(8, 77, 1024, device="cuda", dtype=torch.float16)

    def step():
        with torch.no_grad():
            model(latents, timesteps, encoder_hidden_states=context)

    return {"unet_fwd_b8": timed(step, reps)}


def sample(model, size, steps, reps):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float16).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    seed = iter(range(reps + 1))

    def step():
        with torch.inference_mode():
            pipe(
                "a photograph of an astronaut riding a horse",
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=7.5,
                generator=torch.Generator("cuda").manual_seed(next(seed)),
                output_type="pil",
            )

    return {"sample": timed(step, reps)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workload", choices=["unet", "sample"])
    p.add_argument("--model")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", required=True)
    a = p.parse_args()
    torch.manual_seed(0)
    result = unet(a.reps) if a.workload == "unet" else sample(a.model, a.size, a.steps, a.reps)
    result["device"] = torch.cuda.get_device_name()
    result["torch"] = torch.__version__
    with open(a.json, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
