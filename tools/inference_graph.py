"""The CPU inference graph against the unfused model and onnxruntime, in one process.

    python tools/inference_graph.py --model resnet50 --batch_size 1 --repeats 10

Times one eval-mode forward pass of: the unfused model (kernels="native", the variables as
loaded), the fused graph with NHWC activations, the fused graph with blocked activations (what
`models.kernels.for_inference` prepares), and the same network in onnxruntime (the benchmark's
runner); interleaved, so this VM's drifts hit all alike. Prints each median in ms and its speed
against onnxruntime's. Needs the CPU extension (linux x86_64) and the [dev] extra.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import resnet_jax.cpu  # noqa: F401  (registers the "native" kernels)
from resnet_jax.bench import train_step
from resnet_jax.cpu import extension
from resnet_jax.models import kernels as seam
from resnet_jax.models.zoo import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    image_shape = (args.image_size, args.image_size, 3)
    model = create_model(args.model, num_classes=1000, kernels="native")
    x = jax.device_put(np.random.default_rng(0).standard_normal(
        (args.batch_size, *image_shape), dtype=np.float32))
    variables = jax.tree_util.tree_map(
        np.asarray, model.init(jax.random.key(1), x[:1], train=False))

    def runner(prepared):
        prepared = jax.device_put(prepared)
        forward = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
            prepared, x).compile()
        return lambda: jax.block_until_ready(forward(prepared, x))

    runs = {"unfused": runner(variables)}
    blocks = extension.channel_block
    extension.channel_block = lambda: 1 << 30  # no channel count divisible: NHWC throughout
    try:
        runs["fused, NHWC"] = runner(seam.for_inference(model, variables, image_shape))
    finally:
        extension.channel_block = blocks
    runs["fused, blocked"] = runner(seam.for_inference(model, variables, image_shape))
    onnx, _ = train_step.onnx_runner("onnxruntime", args.model, args.batch_size,
                                     args.image_size, "float32", "inference", 1000)
    runs["onnxruntime"] = lambda: onnx(1)
    for run in runs.values():
        run()  # warm-up
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(t)) for name, t in times.items()}
    for name, median in medians.items():
        print(f"{name:16s} {1000 * median:8.1f} ms  {medians['onnxruntime'] / median:.2f}x "
              "onnxruntime")


if __name__ == "__main__":
    main()
