#!/usr/bin/env bash
# One MVDream UNet forward at the real size (random weights, fp32, CPU): batch 8 = 4 views x
# CFG, 32x32 latents. dream3d multi-view, dream3d in 2-D mode, and diffusers' UNet (2-D, the
# reference cost at the same shapes), each in its own process, in one run.
#   benches/mvdream_unet.sh [REPS]      (sets up .venv-ref: benches/ref-env/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
benches/ref-env/setup.sh
reps=${1:-3}
out=bench-out
mkdir -p "$out"
cargo build --release --example bench_mvdream_unet
.venv-ref/bin/python benches/torch_reference.py --only unet_fwd_b8 --reps "$reps" --json "$out/torch_unet_b8.json"
target/release/examples/bench_mvdream_unet --reps "$reps" --json "$out/dream3d_mv_unet.json"
target/release/examples/bench_mvdream_unet --reps "$reps" --mode 2d --json "$out/dream3d_unet_b8.json"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
t = json.load(open(f"{out}/torch_unet_b8.json"))["unet_fwd_b8"]
rows = [("diffusers UNet (2-D), PyTorch", t),
        ("dream3d, 2-D mode", json.load(open(f"{out}/dream3d_unet_b8.json"))["unet_fwd_b8"]),
        ("dream3d, MVDream 4-view (joint attention + cameras)", json.load(open(f"{out}/dream3d_mv_unet.json"))["mv_unet_fwd_b8"])]
print("| UNet forward, 8×4×32×32 | time | peak RSS | vs PyTorch |")
print("|---|---|---|---|")
for label, r in rows:
    print(f"| {label} | {r['median_s']:.2f} s | {r['peak_rss_bytes'] / 1e9:.2f} GB | "
          f"{r['median_s'] / t['median_s']:.2f}× time, {r['peak_rss_bytes'] / t['peak_rss_bytes']:.2f}× memory |")
PY
