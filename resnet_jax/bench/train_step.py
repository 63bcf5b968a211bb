"""JAX vs PyTorch, side by side in one process: training and inference throughput, MFU, compile.

    python -m resnet_jax.bench --model resnet50 --batch_size 256 --dtype bfloat16 \\
        --frameworks jax,torch,torch_compile --json results.json

The JAX training step is `resnet_jax.train.steps.train_step`, compiled by the same function as in
`train.py` (forward, backward, SGD with momentum and weight decay, batch-norm update, donated
state). The PyTorch side is torchvision's model (or the package's twin), channels-last, eager,
`torch.optim.SGD` with the same hyper-parameters, autocast for bfloat16; `torch_compile` adds
a `torch.compile`d row. Both run on one device (the first). Warm-up (two steps each, then one
untimed interleaved round) is excluded; repeats are interleaved between frameworks; the median
over repeats is reported with the spread (min..max).

Imports only jax, flax, optax, numpy and (optionally) torch: it runs on a bare accelerator image.
`--input_pipeline` and `--resume_latency` (need TensorFlow) measure the ImageNet training input
pipeline instead (`resnet_jax.bench.input_pipeline`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import environment, models
from resnet_jax.bench.peers import (
    LEARNING_RATE,
    MOMENTUM,
    ONNX_ENGINES,
    WEIGHT_DECAY,
    onnx_runner,
    torch_peak_memory_gb,
    torch_runner,
)
from resnet_jax.files import write_atomically
from resnet_jax.launch import host_memory, sharding
from resnet_jax.models import kernels as kernel_seam
from resnet_jax.train import optim, steps

# Dense peak FLOP/s per device by (device kind substring, dtype), vendor datasheets. MFU is
# model FLOPs (3 x forward MACs x 2 per image for training) / time / this.
PEAK_FLOPS = {
    ("H200", "bfloat16"): 989e12, ("H200", "float32"): 494e12,  # float32 convs run as TF32
    ("H100", "bfloat16"): 989e12, ("H100", "float32"): 494e12,
    ("A100", "bfloat16"): 312e12, ("A100", "float32"): 156e12,
    ("TPU v4", "bfloat16"): 275e12, ("TPU v5 lite", "bfloat16"): 197e12,
    ("TPU v5", "bfloat16"): 459e12,
}

# JAX rows: the package's defaults, and variants that isolate one choice for measurement.
JAX_VARIANTS = {"jax": {}, "jax_two_pass_bn": {"bn_one_pass_variance": False}}
FRAMEWORKS = (*JAX_VARIANTS, "torch", "torch_compile", *ONNX_ENGINES)
# train: forward, backward, SGD; inference: logits in eval mode; embed: the pooled features
# (num_classes=0), L2-normalised, as embed.py computes them.
MODES = ("train", "inference", "embed")


@dataclasses.dataclass
class Row:
    framework: str
    model: str
    batch_size: int
    image_size: int
    dtype: str
    mode: str  # train | inference | embed
    images_per_sec: float | None = None
    images_per_sec_min: float | None = None
    images_per_sec_max: float | None = None
    step_ms: float | None = None
    compile_s: float | None = None
    mfu: float | None = None
    peak_memory_gb: float | None = None
    error: str | None = None


def peak_flops(device_kind: str, dtype: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    for (kind, peak_dtype), flops in PEAK_FLOPS.items():
        if kind.lower() in device_kind.lower() and peak_dtype == dtype:
            return flops
    return None


# --- JAX ------------------------------------------------------------------------------------

def jax_runner(name: str, batch_size: int, image_size: int, dtype: str, mode: str,
               num_classes: int, kernels: str = "auto",
               **model_options) -> tuple[Callable[[int], None], float]:
    """Compiles the step; returns (run `n` steps and wait, compile seconds)."""
    compute = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    if mode == "embed":
        return _jax_embed_runner(name, batch_size, image_size, compute, kernels, model_options)
    model = models.create_model(name, num_classes=num_classes, dtype=compute, kernels=kernels,
                                **model_options)
    tx = optim.sgd(LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    mesh = sharding.create_mesh(jax.devices()[:1])  # one device, as the PyTorch side uses
    image_shape = (image_size, image_size, 3)
    state = jax.jit(functools.partial(steps.create_train_state, model, tx, image_shape),
                    out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = sharding.to_global({
        "image": rng.standard_normal((batch_size, *image_shape), dtype=np.float32),
        "label": rng.integers(0, num_classes, batch_size).astype(np.int32),
        "mask": np.ones(batch_size, bool)}, mesh)
    if mode == "train":
        train_fn, compile_s = steps.compile_train_step(state, mesh, (batch_size, *image_shape))
        batch = {k: batch[k] for k in ("image", "label")}
        holder = {"state": state}

        def run(n):
            state = holder["state"]
            for _ in range(n):
                state, sums = train_fn(state, batch)
            jax.block_until_ready(sums)
            holder["state"] = state

        run.compiled = train_fn  # for tools/profile_step.py: the HLO's custom-call targets
    else:
        variables = jax.device_put(kernel_seam.for_inference(
            model, jax.tree_util.tree_map(np.asarray, steps.variables_of(state)), image_shape))
        eval_fn, compile_s = steps.compile_eval_step(model.apply, variables, mesh,
                                                     (batch_size, *image_shape))

        def run(n):
            for _ in range(n):
                out = eval_fn(variables, batch)
            jax.block_until_ready(out)
    return run, compile_s


def _jax_embed_runner(name, batch_size, image_size, compute, kernels, model_options):
    from resnet_jax.retrieval.search import unit_rows  # embed.py's normalisation

    model = models.create_model(name, num_classes=0, dtype=compute, kernels=kernels,
                                **model_options)
    x = np.random.default_rng(0).standard_normal((batch_size, image_size, image_size, 3),
                                                 dtype=np.float32)
    variables = jax.jit(model.init, static_argnames="train")(jax.random.PRNGKey(0), x[:1],
                                                             train=False)
    variables = jax.device_put(kernel_seam.for_inference(
        model, jax.tree_util.tree_map(np.asarray, variables), x.shape[1:]))
    embed = jax.jit(lambda v, x: unit_rows(model.apply(v, x, train=False)
                                            .astype(jnp.float32)))
    start = time.perf_counter()
    embed = embed.lower(variables, x).compile()
    compile_s = time.perf_counter() - start
    x = jax.device_put(x)

    def run(n):
        for _ in range(n):
            out = embed(variables, x)
        jax.block_until_ready(out)

    run.compiled = embed  # for tools/profile_step.py
    return run, compile_s


def jax_peak_memory_gb() -> float | None:
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return peak / 2**30 if peak else None


# --- driver ---------------------------------------------------------------------------------

def benchmark(model: str, batch_size: int, image_size: int, dtype: str, frameworks: list[str],
              steps_per_repeat: int, repeats: int, modes: list[str], num_classes: int = 1000,
              peak_tflops: float | None = None, log=print, kernels: str = "auto") -> dict:
    """Rows for every framework and mode; JAX's models use `kernels` (see models.kernels)."""
    device_kind = jax.devices()[0].device_kind
    peak = peak_flops(device_kind, dtype, peak_tflops)
    train_flops = 3 * 2 * models.forward_macs(models.create_model(model, num_classes=num_classes),
                                              image_size)
    rows = []
    for mode in modes:
        runners = {}
        for framework in frameworks:
            row = Row(framework, model, batch_size, image_size, dtype, mode)
            try:
                if framework in JAX_VARIANTS:
                    run, row.compile_s = jax_runner(model, batch_size, image_size, dtype, mode,
                                                    num_classes, kernels=kernels,
                                                    **JAX_VARIANTS[framework])
                elif framework in ONNX_ENGINES:
                    run, row.compile_s = onnx_runner(framework, model, batch_size, image_size,
                                                     dtype, mode, num_classes)
                else:
                    run, row.compile_s = torch_runner(model, batch_size, image_size, dtype, mode,
                                                      num_classes, framework == "torch_compile")
                run(2)  # warm-up, excluded
                runners[framework] = (row, run, [])
            except Exception as error:  # noqa: BLE001  (a failing row must not sink the others)
                row.error = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                log(f"{framework} {mode}: {row.error}")
            rows.append(row)
        # Interleaved, so that drifts (clocks, heat, neighbours) hit all alike. Round 0 is
        # warm-up too: the first switch between frameworks grows the shared heap (page faults
        # in JAX's first round after PyTorch's warm-up, none later; BENCHMARKS.md), which is
        # not the steady state measured here.
        for repeat in range(repeats + 1):
            for _row, run, times in runners.values():
                start = time.perf_counter()
                run(steps_per_repeat)
                if repeat:
                    times.append(time.perf_counter() - start)
        for framework, (row, _run, times) in runners.items():
            rates = [steps_per_repeat * batch_size / t for t in times]
            row.images_per_sec = statistics.median(rates)
            row.images_per_sec_min, row.images_per_sec_max = min(rates), max(rates)
            row.step_ms = 1000 * batch_size / row.images_per_sec
            flops_per_image = train_flops if mode == "train" else train_flops / 3
            if peak:
                row.mfu = row.images_per_sec * flops_per_image / peak
            row.peak_memory_gb = (jax_peak_memory_gb() if framework in JAX_VARIANTS
                                  else torch_peak_memory_gb()
                                  if framework not in ONNX_ENGINES else None)
    return {"results": [dataclasses.asdict(r) for r in rows], "device": device_kind,
            "device_count": 1, "versions": versions(),
            # the JAX model's kernels as asked for, and what they resolved to here
            "kernels": kernels, "kernels_used": kernel_seam.resolve(kernels, dtype).name,
            "date": time.strftime("%Y-%m-%d")}


def versions() -> dict:
    import flax
    import optax
    found = {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
             "python": sys.version.split()[0]}
    try:
        import torch
        import torchvision
        found.update(torch=torch.__version__, torchvision=torchvision.__version__)
    except ImportError:
        pass
    return found


def format_table(result: dict) -> str:
    lines = [f"device: {result['device']} x{result['device_count']}, JAX kernels: "
             f"{result['kernels']} ({result['kernels_used']})",
             f"{'framework':<17}{'mode':<10}{'model':<16}{'batch':>6}{'size':>6}{'dtype':>10}"
             f"{'img/s':>10}{'(min..max)':>18}{'step ms':>9}{'compile s':>10}{'MFU':>7}"]
    by_mode = {}
    for row in result["results"]:
        if row["error"]:
            lines.append(f"{row['framework']:<17}{row['mode']:<10}{row['model']:<16} "
                         f"failed: {row['error']}")
            continue
        spread = f"{row['images_per_sec_min']:.0f}..{row['images_per_sec_max']:.0f}"
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] else "-"
        lines.append(f"{row['framework']:<17}{row['mode']:<10}{row['model']:<16}"
                     f"{row['batch_size']:>6}{row['image_size']:>6}{row['dtype']:>10}"
                     f"{row['images_per_sec']:>10.1f}{spread:>18}{row['step_ms']:>9.1f}"
                     f"{row['compile_s']:>10.1f}{mfu:>7}")
        by_mode.setdefault(row["mode"], {})[row["framework"]] = row["images_per_sec"]
    for mode, rates in by_mode.items():
        if "jax" in rates:
            for other in ("torch", "torch_compile"):
                if other in rates:
                    lines.append(f"{mode}: jax / {other} = {rates['jax'] / rates[other]:.2f}")
    return "\n".join(lines)


def use_compile_cache(cache_dir: str) -> None:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def warm_compile_s(model: str, batch_size: int, image_size: int, dtype: str,
                   kernels: str) -> float:
    """Compile time of the training step again, from the persistent cache, in-memory cleared."""
    jax.clear_caches()
    _, warm = jax_runner(model, batch_size, image_size, dtype, "train", 1000, kernels=kernels)
    return warm


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50", choices=sorted(models.MODELS))
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=None,
                        help="default: 224 (ImageNet family) or 32 (CIFAR family)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--kernels", default="auto", choices=kernel_seam.names(),
                        help="the JAX model's kernels (resnet_jax.models.kernels)")
    parser.add_argument("--frameworks", default="jax,torch",
                        help=f"comma-separated: {', '.join(FRAMEWORKS)}")
    parser.add_argument("--modes", default="train",
                        help=f"comma-separated: {', '.join(MODES)}")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="peak FLOP/s of one device, for MFU where the table lacks it")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--compile_cache", default=None, metavar="DIR",
                        help="measure cold and warm compile of the train step with this cache")
    parser.add_argument("--input_pipeline", action="store_true",
                        help="measure the ImageNet input pipeline instead (needs TensorFlow)")
    parser.add_argument("--pipelines", default="random_access,sequential_tfrecord",
                        help="with --input_pipeline, comma-separated: "
                             "random_access, random_access_ta_wide, sequential_tfrecord, "
                             "grain_pil")
    parser.add_argument("--resume_latency", action="store_true",
                        help="measure the input pipeline's time to the first batch at step 0 "
                             "and mid-epoch instead (needs TensorFlow)")
    parser.add_argument("--records", type=int, default=100_000,
                        help="with --resume_latency: records in the dataset it writes")
    parser.add_argument("--search", action="store_true",
                        help="measure image search instead: exact on the devices vs faiss")
    parser.add_argument("--gallery_size", type=int, default=100_000,
                        help="with --search: gallery embeddings")
    parser.add_argument("--dimension", type=int, default=512, help="with --search")
    parser.add_argument("--queries", type=int, default=1_000, help="with --search")
    parser.add_argument("--default_malloc", action="store_true",
                        help="keep glibc's default allocator thresholds (train.py and this "
                             "benchmark otherwise set them: resnet_jax.host_memory)")
    return parser


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    frameworks = [f for f in args.frameworks.split(",") if f]
    unknown = set(frameworks) - set(FRAMEWORKS)
    modes = [m for m in args.modes.split(",") if m]
    if unknown or not frameworks:
        parser.error(f"unknown framework(s) {sorted(unknown)}; valid: {', '.join(FRAMEWORKS)}")
    if set(modes) - set(MODES) or not modes:
        parser.error(f"--modes takes {', '.join(MODES)}")
    # The input pipeline is measured as an accelerator host runs it: several malloc arenas.
    malloc_tuned = not args.default_malloc and host_memory.reuse_freed_memory(
        single_arena=False if args.input_pipeline or args.resume_latency else None)
    environment.announce(args.kernels, args.dtype, file=sys.stderr)  # stdout may be JSON
    if args.search:
        from resnet_jax.bench import search as search_benchmark
        result = search_benchmark.run(args.gallery_size, args.dimension, args.queries)
        print(json.dumps(result, indent=2))
    elif args.input_pipeline or args.resume_latency:
        from resnet_jax.bench import input_pipeline as pipeline_benchmark
        pipelines = tuple(p for p in args.pipelines.split(",") if p)
        if set(pipelines) - set(pipeline_benchmark.PIPELINES) or not pipelines:
            parser.error(f"--pipelines takes {', '.join(pipeline_benchmark.PIPELINES)}")
        if args.input_pipeline:
            result = pipeline_benchmark.run(batch_size=args.batch_size,
                                            image_size=args.image_size or 224,
                                            pipelines=pipelines)
        else:
            result = pipeline_benchmark.resume_latency(args.records, args.batch_size,
                                                       args.image_size or 224)
        result["malloc_tuned"] = malloc_tuned
        print(json.dumps(result, indent=2))
    else:
        image_size = args.image_size or models.default_image_size(args.model)
        if args.compile_cache:  # an empty dir: the JAX train row's compile is the cold one
            cache_dir = os.path.expanduser(args.compile_cache)
            if os.path.isdir(cache_dir) and os.listdir(cache_dir):
                parser.error(f"--compile_cache {cache_dir} must be empty or new, to time a "
                             "cold compile")
            use_compile_cache(cache_dir)
        result = benchmark(args.model, args.batch_size, image_size, args.dtype, frameworks,
                           args.steps, args.repeats, modes, peak_tflops=args.peak_tflops,
                           kernels=args.kernels)
        result["malloc_tuned"] = malloc_tuned
        if args.compile_cache and "jax" in frameworks and "train" in modes:
            cold = next(r["compile_s"] for r in result["results"]
                        if r["framework"] == "jax" and r["mode"] == "train")
            result["compile_cache"] = {
                "cold_compile_s": cold,
                "warm_compile_s": warm_compile_s(args.model, args.batch_size, image_size,
                                                 args.dtype, args.kernels)}
        print(format_table(result))
        if "compile_cache" in result:
            c = result["compile_cache"]
            print(f"jax train-step compile: cold {c['cold_compile_s']:.1f} s, warm (persistent "
                  f"cache) {c['warm_compile_s']:.1f} s")
    if args.json:
        write_atomically(args.json, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
