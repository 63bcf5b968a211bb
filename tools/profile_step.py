"""Where a JAX training step spends its time: per-kernel totals from a `jax.profiler` trace.

    python tools/profile_step.py --model resnet50 --batch_size 16 --steps 2
    python tools/profile_step.py --model resnet20 --batch_size 128 --image_size 32
    python tools/profile_step.py --model resnet50 --batch_size 16 --mode embed

Builds and compiles the benchmark's training step (`resnet_jax.bench.train_step.jax_runner`, the
package's defaults, float32), runs two warm-up steps, traces `--steps` more and prints, per
kernel kind, seconds per step and calls per step: the CPU extension's custom calls by target
name (`resnet_jax_onednn_conv_forward`, ...), XLA's fused loops by their fusion kind
(`multiply_add_fusion`, ...). The trace slows the step somewhat (more for models with short
kernels); BENCHMARKS.md quotes its output.
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import tempfile
import time

from resnet_jax.launch import host_memory


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=15, help="kernel kinds to list")
    parser.add_argument("--mode", default="train", choices=("train", "embed"),
                        help="the training step, or embed.py's forward pass (pooled features)")
    args = parser.parse_args()
    host_memory.reuse_freed_memory()  # as train.py and the benchmark do, before JAX starts

    import jax

    from resnet_jax import models
    from resnet_jax.bench import train_step as benchmark

    num_classes = 1000 if args.model in models.TORCHVISION_MODELS else 10
    run, _ = benchmark.jax_runner(args.model, args.batch_size, args.image_size, "float32",
                                  args.mode, num_classes)
    targets = dict(re.findall(r'%?(ffi_call[.\d]*) = .*?custom_call_target="([^"]+)"',
                              run.compiled.as_text()))
    run(2)
    with tempfile.TemporaryDirectory() as trace_dir:
        start = time.perf_counter()
        with jax.profiler.trace(trace_dir):
            run(args.steps)
        wall = (time.perf_counter() - start) / args.steps
        (trace,) = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
        profile = jax.profiler.ProfileData.from_file(trace)
    seconds, calls = collections.Counter(), collections.Counter()
    for plane in profile.planes:
        for line in plane.lines:
            if "Eigen" not in line.name:  # XLA:CPU's worker threads run the kernels
                continue
            for event in line.events:
                if event.name.startswith(("ThunkExecutor", "end: ")):
                    continue
                kind = targets.get(event.name) or re.sub(r"[.\d]+$", "", event.name)
                seconds[kind] += event.duration_ns / 1e9 / args.steps
                calls[kind] += 1
    print(f"{args.model}, batch {args.batch_size}, {args.image_size}x{args.image_size}: "
          f"{wall:.3f} s per traced step, kernels {sum(seconds.values()):.3f} s")
    print(f"{'s/step':>8} {'calls':>6}  kernel")
    for kind, s in seconds.most_common(args.top):
        print(f"{s:8.4f} {calls[kind] // args.steps:6d}  {kind}")


if __name__ == "__main__":
    main()
