#!/usr/bin/env bash
# Everything BENCHMARKS.md measures on a lent GPU (the workplace's device tool), in one call:
# the wgpu kernels' tests and render benchmark through the GPU's Vulkan driver, then candle's
# CUDA build beside PyTorch/diffusers (fp16): one image at 256 and 512 px, and the MVDream UNet
# forward at batch 8. The GPU machine has no Rust toolchain and no network, so everything is
# built here and carried (see BENCHMARKS.md for the build commands):
#   .devpack/devbin.tar.xz  .devbin/{bench_render,bench_sample,bench_mvdream_unet,gpu_field,
#             reconstruction}, stripped, built with --features cuda against CUDA 13.0 (xz: the
#             five binaries hold 240 MB, mostly the same CUDA kernels five times)
#   .gl/      the Vulkan loader's Debian packages;  .whl/  diffusers and importlib_metadata
# Each stage has its own time limit and writes to $OUT as it goes.
set -uo pipefail
out=${OUT:-bench-out}
mkdir -p "$out"
python3 -c 'import tarfile; tarfile.open(".devpack/devbin.tar.xz").extractall()'
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -e "$icd" ] && export VK_DRIVER_FILES=$icd
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
cuda_libs=$(python3 -c 'import nvidia, os; print(":".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))')
export LD_LIBRARY_PATH=$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"
peak=$(python3 - <<'PY'
import torch
x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
y = torch.empty_like(x)
for _ in range(3):
    y.copy_(x)
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(20):
    y.copy_(x)
end.record()
torch.cuda.synchronize()
print(f"{2 * 20 * x.numel() / (start.elapsed_time(end) / 1e3) / 1e9:.0f}")
PY
)
echo "device-to-device copy: $peak GB/s (read + write)" | tee -a "$out/gpu.txt"

# The wgpu kernels on the GPU's Vulkan driver: correctness first, then speed.
tests() {
  timeout "$2" .devbin/$1 --test-threads 1 >"$out/$1.txt" 2>&1
  echo "$1: exit $?"; grep -E "^test result|FAILED|panicked" "$out/$1.txt" | head -5
}
tests gpu_field 100
timeout 90 .devbin/bench_render --train-steps 150 --reference-stride 16 --peak-gbs "$peak" \
  >"$out/bench_render.txt" 2>&1
tail -8 "$out/bench_render.txt"

# candle (CUDA, f16) beside PyTorch (f16) on the same random weights.
timeout 45 .devbin/bench_mvdream_unet --reps 10 --json "$out/dream3d_mv_unet.json" >/dev/null
timeout 45 .devbin/bench_mvdream_unet --reps 10 --mode 2d --json "$out/dream3d_unet_b8.json" >/dev/null
timeout 60 python3 benches/torch_gpu.py unet --reps 10 --json "$out/torch_unet_b8.json" >/dev/null
model=/tmp/sd21-base-random
timeout 90 python3 benches/torch_sample.py --make "$model"
for size in 256 512; do
  timeout 60 python3 benches/torch_gpu.py sample --model "$model" --size $size --steps 20 \
    --reps 3 --json "$out/torch_sample_$size.json" >/dev/null
  timeout 60 .devbin/bench_sample --model "$model" --size $size --steps 20 --reps 3 \
    --json "$out/dream3d_sample_$size.json"
done
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def median(name, key):
    path = os.path.join(out, name)
    return json.load(open(path))[key]["median_s"] if os.path.exists(path) else float("nan")
rows = [("UNet forward, batch 8, 32×32 (2-D)", median("torch_unet_b8.json", "unet_fwd_b8"),
         median("dream3d_unet_b8.json", "unet_fwd_b8")),
        ("MVDream UNet forward, 4 views × CFG (dream3d multi-view)", median("torch_unet_b8.json", "unet_fwd_b8"),
         median("dream3d_mv_unet.json", "mv_unet_fwd_b8"))]
rows += [(f"one image {s} px, 20 DDIM steps, CFG", median(f"torch_sample_{s}.json", "sample"),
          median(f"dream3d_sample_{s}.json", "sample")) for s in (256, 512)]
print("| workload | PyTorch | dream3d | dream3d / PyTorch time |")
print("|---|---|---|---|")
for label, t, d in rows:
    print(f"| {label} | {t * 1e3:.1f} ms | {d * 1e3:.1f} ms | {d / t:.2f}× |")
PY
tests reconstruction 60
