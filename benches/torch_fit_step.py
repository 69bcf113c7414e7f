#!/usr/bin/env python3
"""PyTorch/diffusers reference timing for one DreamDistribution fit step.

The step follows the official DreamDistribution training code (see
shared/references/dreamdistribution-method.md, sections 1.2-1.8) at the SD 2.1-base
sizes: K=32 soft prompts of L=4 tokens through the 23-layer text encoder, mu/sigma over
K, M=4 sampled conditionings for one 256 px image (1x4x32x32 latents; the frozen VAE's
latents are cached in a real fit, so it is left out), UNet forward and backward to the
prompts, gradient clipping and AdamW. Random weights, fp32, CPU, 2 threads, run in its
own subprocess like the workloads of torch_reference.py, whose builders and timing it reuses.

    .venv-ref/bin/python benches/torch_fit_step.py --json bench-out/torch_fit_step.json
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference  # noqa: E402  (also sets HF_HUB_OFFLINE before diffusers loads)
from torch_reference import NUM_THREADS, frozen, sd21_text_encoder, sd21_unet  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

K = 32  # prompts (n_prompts)
L = 4  # learned tokens per prompt (n_ctx)
M = 4  # conditionings sampled per image (reparam_samples, train.sh)
BOS, EOS, PAD = 49406, 49407, 0  # the SD 2.1 tokenizer pads with "!" (id 0), not EOS
EOS_INDEX = 1 + L  # [BOS] ctx(L) [EOS] pad...
SNR_GAMMA = 5.0
ORTHO_WEIGHT = 1e-3


def encode_prompts(text, prefix, ctx, suffix, causal_mask):
    """The official CustomTextEncoder: (K, 77, 1024) final-LN hidden states."""
    k = ctx.shape[0]
    seq = torch.cat([prefix.expand(k, -1, -1), ctx, suffix.expand(k, -1, -1)], dim=1)
    # Position embeddings go on all 77 slots here, on top of the ones the fixed tokens
    # already carry: the official double-position quirk.
    seq = seq + text.embeddings.position_embedding.weight
    hidden = text.encoder(inputs_embeds=seq, attention_mask=causal_mask).last_hidden_state
    return text.final_layer_norm(hidden)  # no text_projection


def orthogonality_loss(pooled):
    """Mean over i != j of the squared cosine between the pooled prompt features."""
    p = F.normalize(pooled, dim=-1)
    cos2 = (p @ p.T).square()
    k = p.shape[0]
    return (cos2.sum() - cos2.diagonal().sum()) / (k * (k - 1))


def setup_fit_step():
    from diffusers import DDPMScheduler

    unet = frozen(sd21_unet())
    text = frozen(sd21_text_encoder())
    # SD 2.1-base: epsilon prediction, scaled_linear betas.
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", prediction_type="epsilon")
    ac = scheduler.alphas_cumprod
    snr = ac / (1 - ac)

    # Fixed tokens, embedded once like the official buffers: token + position embedding.
    # The ctx slots of `ids` are placeholders; only [BOS] and [EOS] pad... are kept.
    ids = torch.full((1, 77), PAD)
    ids[0, 0], ids[0, EOS_INDEX] = BOS, EOS
    with torch.no_grad():
        fixed = text.embeddings(input_ids=ids)
    prefix, suffix = fixed[:, :1], fixed[:, EOS_INDEX:]
    # Additive causal mask built by hand, as the official code does; no padding mask.
    causal_mask = torch.full((77, 77), torch.finfo(torch.float32).min).triu(1)[None, None]

    ctx = torch.nn.Parameter(torch.randn(K, L, 1024) * 0.02)
    opt = torch.optim.AdamW([ctx], lr=1e-3, weight_decay=1e-2)
    x0 = torch.randn(1, 4, 32, 32)  # cached VAE latents of one 256 px image

    def step():
        opt.zero_grad(set_to_none=True)
        hidden = encode_prompts(text, prefix, ctx, suffix, causal_mask)
        mu, sigma = hidden.mean(0), hidden.std(0)  # unbiased std over K
        ortho = orthogonality_loss(hidden[:, EOS_INDEX])

        t = torch.randint(0, 1000, (1,))
        noise = torch.randn_like(x0)
        x_t = scheduler.add_noise(x0, noise, t)
        cond = mu + sigma * torch.randn(M, 77, 1024)
        # Each image's M conditionings share its noise and timestep.
        pred = unet(x_t.repeat(M, 1, 1, 1), t.repeat(M), encoder_hidden_states=cond).sample
        mse = (pred - noise.repeat(M, 1, 1, 1)).square().mean(dim=(1, 2, 3))
        weight = snr[t].clamp(max=SNR_GAMMA) / snr[t]  # Min-SNR, epsilon form
        loss = (weight * mse).mean() + ORTHO_WEIGHT * ortho

        loss.backward()
        torch.nn.utils.clip_grad_norm_([ctx], 1.0)
        opt.step()

    return step


# Registered with torch_reference so that run_child times it and reads the peak RSS
# exactly as it does for the other workloads.
torch_reference.WORKLOADS["fit_step"] = setup_fit_step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions after 1 warm-up")
    parser.add_argument("--json", required=True, metavar="OUT.json", help="where to write results")
    parser.add_argument("--child", choices=["fit_step"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reps < 1:
        parser.error("--reps must be at least 1")

    if args.child:
        torch_reference.run_child("fit_step", args.reps, args.json)
        return

    print("running fit_step ...", file=sys.stderr, flush=True)
    results = {"fit_step": torch_reference.run_in_subprocess("fit_step", args.reps, script=__file__)}

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)

    r = results["fit_step"]
    print(f"torch {torch.__version__}, fp32, CPU, {NUM_THREADS} threads, median of {args.reps}")
    print(f"fit_step: median {r['median_s']:.3f} s, peak RSS {r['peak_rss_bytes'] / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
