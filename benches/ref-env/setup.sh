#!/usr/bin/env bash
# The PyTorch/diffusers reference environment (.venv-ref at the repository root) that the
# side-by-side benchmarks and the fixture generators run: the pinned versions in
# requirements.txt beside this file (torch 2.15.0 CPU wheel, diffusers 0.42.1, transformers
# 5.24.0, open_clip_torch 3.3.0). `--no-deps` matters: open_clip, timm and torchvision would
# otherwise pull triton and every CUDA library back in. Does nothing when it exists.
#   benches/ref-env/setup.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv-ref/bin/python ] && exit 0
python3 -m venv .venv-ref
.venv-ref/bin/pip install -q --no-deps -r benches/ref-env/requirements.txt
