#!/usr/bin/env bash
# Second GPU run (BENCHMARKS.md, "batch-norm variance"): one-pass (default for bf16) vs two-pass
# batch-norm variance in the JAX step, against torch.compile in the same process; then JAX alone
# at batch 512.   OUT=results bash tools/gpu_bn_experiment.sh
set -uo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$(pwd)
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
python3 -m resnet_jax.benchmark --model resnet50 --batch_size 256 --dtype bfloat16 \
    --frameworks jax,jax_two_pass_bn,torch_compile --steps 20 --repeats 5 \
    --json "$OUT/resnet50_bf16_b256_bn.json" 2>&1 \
    | grep -v -iE "warning|^W0|^I0" | tee "$OUT/resnet50_bf16_b256_bn.txt"
XLA_PYTHON_CLIENT_MEM_FRACTION=0.8 python3 -m resnet_jax.benchmark --model resnet50 \
    --batch_size 512 --dtype bfloat16 --frameworks jax --steps 10 --repeats 5 \
    --json "$OUT/resnet50_bf16_b512_jax.json" 2>&1 \
    | grep -v -iE "warning|^W0|^I0" | tee "$OUT/resnet50_bf16_b512_jax.txt"
