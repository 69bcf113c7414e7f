#!/usr/bin/env bash
# One DreamDistribution fit step at the SD 2.1-base size (random weights, 256 px, K=32, M=4,
# batch 1, CPU fp32): PyTorch/diffusers, then dream3d, in one run.
#   benches/fit_step.sh [REPS]      (sets up .venv-ref: benches/ref-env/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
benches/ref-env/setup.sh
reps=${1:-3}
mkdir -p bench-out
cargo build --release --example bench_fit_step
.venv-ref/bin/python benches/torch_fit_step.py --reps "$reps" --json bench-out/torch_fit_step.json
target/release/examples/bench_fit_step --reps "$reps" --json bench-out/dream3d_fit_step.json
python3 - <<'PY'
import json
t = json.load(open("bench-out/torch_fit_step.json"))["fit_step"]
d = json.load(open("bench-out/dream3d_fit_step.json"))["fit_step"]
print("| fit step | PyTorch | dream3d | ratio |")
print("|---|---|---|---|")
print(f"| 256 px, K=32, M=4, batch 1 | {t['median_s']:.2f} s, {t['peak_rss_bytes']/1e9:.2f} GB | "
      f"{d['median_s']:.2f} s, {d['peak_rss_bytes']/1e9:.2f} GB | "
      f"{d['median_s']/t['median_s']:.2f}x time, {d['peak_rss_bytes']/t['peak_rss_bytes']:.2f}x memory |")
PY
