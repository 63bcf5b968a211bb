#!/usr/bin/env bash
# The GPU benchmark recorded in BENCHMARKS.md: one prepared run on one accelerator host.
#   OUT=results bash tools/gpu_benchmark.sh
# Each benchmark writes its JSON as soon as it ends, so a run cut short keeps what it measured.
set -uo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$(pwd)
# JAX and PyTorch share the GPU in one process: JAX must not pre-allocate 75% of it.
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m resnet_jax.benchmark --model resnet50 --batch_size 256 --dtype bfloat16 \
    --frameworks jax,torch,torch_compile --steps 20 --repeats 5 \
    --compile_cache /tmp/resnet_jax_xla_cache --json "$OUT/resnet50_bf16_b256.json" 2>&1 \
    | grep -v -iE "warning|^W0|^I0" | tee "$OUT/resnet50_bf16_b256.txt"
python3 -m resnet_jax.benchmark --model resnet20 --batch_size 512 --dtype bfloat16 \
    --frameworks jax,torch,torch_compile --steps 50 --repeats 5 \
    --json "$OUT/resnet20_bf16_b512.json" 2>&1 \
    | grep -v -iE "warning|^W0|^I0" | tee "$OUT/resnet20_bf16_b512.txt"
python3 -m resnet_jax.benchmark --model resnet50 --batch_size 256 --dtype float32 \
    --frameworks jax,torch --steps 10 --repeats 3 --json "$OUT/resnet50_f32_b256.json" 2>&1 \
    | grep -v -iE "warning|^W0|^I0" | tee "$OUT/resnet50_f32_b256.txt"
