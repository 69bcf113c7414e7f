#!/usr/bin/env bash
# One run, one machine: the SD 2.1-base stack (random weights, fp32, CPU) in PyTorch/diffusers,
# in dream3d, and in dream3d with every weight a candle Var (what stock candle modules cost:
# a gradient computed and kept for each frozen weight). Prints the BENCHMARKS.md table.
#   benches/sd_stack.sh [REPS]      (sets up .venv-ref: benches/ref-env/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
benches/ref-env/setup.sh
reps=${1:-3}
out=bench-out
mkdir -p "$out"
cargo build --release --example bench_sd_stack
.venv-ref/bin/python benches/torch_reference.py --reps "$reps" --json "$out/torch.json"
target/release/examples/bench_sd_stack --reps "$reps" --json "$out/dream3d.json"
target/release/examples/bench_sd_stack --reps "$reps" --stock --json "$out/dream3d_stock.json"
python3 benches/report.py "$out/torch.json" "$out/dream3d.json" "$out/dream3d_stock.json"
