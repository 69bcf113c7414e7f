#!/usr/bin/env python3
"""Markdown table of benches/sd_stack.sh results: median time and peak RSS per workload, and
the ratios to PyTorch measured in the same run.

    python3 benches/report.py torch.json dream3d.json dream3d_stock.json
"""
import json
import sys

WORKLOADS = {
    "unet_fwd": "UNet forward 2×4×32×32",
    "unet_fwd_bwd": "UNet forward+backward to the conditioning 1×4×32×32",
    "clip_fwd": "CLIP text encoder forward 8×77",
    "vae_enc_fwd_bwd": "VAE encoder forward+backward to the image 4×3×256×256",
}


def main(torch_path, ours_path, stock_path):
    torch, ours, stock = (json.load(open(p)) for p in (torch_path, ours_path, stock_path))
    print("| workload | PyTorch | dream3d | ratio | weights as Vars (stock candle) | ratio |")
    print("|---|---|---|---|---|---|")
    for key, label in WORKLOADS.items():
        ref = torch[key]
        cells = []
        for run in (ours, stock):
            r = run[key]
            cells.append(
                f"{r['median_s']:.2f} s, {r['peak_rss_bytes'] / 1e9:.2f} GB | "
                f"{r['median_s'] / ref['median_s']:.2f}× time, "
                f"{r['peak_rss_bytes'] / ref['peak_rss_bytes']:.2f}× memory"
            )
        print(f"| {label} | {ref['median_s']:.2f} s, {ref['peak_rss_bytes'] / 1e9:.2f} GB | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main(*sys.argv[1:4])
