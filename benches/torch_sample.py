#!/usr/bin/env python3
"""Text-to-image sampling with the diffusers StableDiffusionPipeline, for BENCHMARKS.md.

`--make DIR` writes an SD 2.1-base pipeline folder with random weights (built from the real
configs in assets/configs/sd21-base; nothing is downloaded), which dream3d then loads too, so
both sides run the very same weights. `--size N` times one image (DDIM, CFG 7.5, batch 1) in a
fresh subprocess per size so that each peak RSS is its own.

    .venv-ref/bin/python benches/torch_sample.py --make /tmp/sd21-base-random
    .venv-ref/bin/python benches/torch_sample.py --model /tmp/sd21-base-random \
        --size 256 --steps 20 --reps 2 --json bench-out/torch_sample_256.json
"""

import argparse
import json
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

NUM_THREADS = 2
CONFIGS = os.path.join(os.path.dirname(__file__), "..", "assets", "configs", "sd21-base")
ASSETS = os.path.join(os.path.dirname(__file__), "..", "assets", "clip")
PROMPT = "a photograph of an astronaut riding a horse"


def config(name):
    with open(os.path.join(CONFIGS, f"{name}.json")) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def make(out):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_config(config("vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig(**config("text_encoder"))),
        tokenizer=CLIPTokenizer(
            os.path.join(ASSETS, "vocab.json"),
            os.path.join(ASSETS, "merges.txt"),
            pad_token="!",
            model_max_length=77,
        ),
        unet=UNet2DConditionModel.from_config(config("unet")),
        # SD 2.1-base's scheduler settings.
        scheduler=DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            prediction_type="epsilon",
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def run(model, size, steps, reps):
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(NUM_THREADS)
    pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    times = []
    with torch.inference_mode():
        for rep in range(reps):
            start = time.perf_counter()
            pipe(
                PROMPT,
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=7.5,
                generator=torch.Generator().manual_seed(rep),
                output_type="pil",
            )
            times.append(time.perf_counter() - start)
    return {
        "median_s": sorted(times)[len(times) // 2],
        "times_s": times,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--make")
    p.add_argument("--model")
    p.add_argument("--size", type=int)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--json")
    a = p.parse_args()
    if a.make:
        make(a.make)
        return
    result = run(a.model, a.size, a.steps, a.reps)
    with open(a.json, "w") as f:
        json.dump({"sample": result}, f, indent=1)


if __name__ == "__main__":
    main()
