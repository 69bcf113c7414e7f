#!/usr/bin/env bash
# Text-to-image throughput at the SD 2.1-base size (random weights, fp32, CPU, 2 threads):
# 20 DDIM steps with CFG 7.5, batch 1, at 256 and 512 px — diffusers' StableDiffusionPipeline
# and dream3d on the same weights folder, in one run. Prints the BENCHMARKS.md table.
#   benches/sample.sh [REPS]      (sets up .venv-ref: benches/ref-env/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
benches/ref-env/setup.sh
reps=${1:-2}
model=${MODEL_DIR:-/tmp/sd21-base-random}
out=bench-out
mkdir -p "$out"
[ -f "$model/model_index.json" ] || .venv-ref/bin/python benches/torch_sample.py --make "$model"
cargo build --release --example bench_sample
for size in ${SIZES:-256 512}; do
  .venv-ref/bin/python benches/torch_sample.py --model "$model" --size $size --steps 20 \
    --reps "$reps" --json "$out/torch_sample_$size.json"
  target/release/examples/bench_sample --model "$model" --size $size \
    --steps 20 --reps "$reps" --json "$out/dream3d_sample_$size.json"
done
python3 - "$out" ${SIZES:-256 512} <<'PY'
import json, sys
out = sys.argv[1]
print("| 20 steps, CFG 7.5, batch 1 | PyTorch/diffusers | dream3d | ratio |")
print("|---|---|---|---|")
for size in [int(s) for s in sys.argv[2:]]:
    t = json.load(open(f"{out}/torch_sample_{size}.json"))["sample"]
    d = json.load(open(f"{out}/dream3d_sample_{size}.json"))["sample"]
    print(f"| {size} px | {60 / t['median_s']:.2f} images/min ({t['median_s']:.1f} s), {t['peak_rss_bytes'] / 1e9:.2f} GB "
          f"| {60 / d['median_s']:.2f} images/min ({d['median_s']:.1f} s), {d['peak_rss_bytes'] / 1e9:.2f} GB "
          f"| {t['median_s'] / d['median_s']:.2f}× throughput, {d['peak_rss_bytes'] / t['peak_rss_bytes']:.2f}× memory |")
PY
