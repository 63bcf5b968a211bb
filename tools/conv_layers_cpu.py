"""The CPU extension's convolutions layer by layer: forward pass, input gradient and weight
gradient of every 3x3 convolution shape in resnet50 (batch 16, 224x224) and resnet20 (batch
128, 32x32), with how often each occurs in the model.

    python tools/conv_layers_cpu.py [--models resnet50,resnet20] [--repeats 11]

Prints the median milliseconds of each call (jitted `resnet_jax.onednn.forward`,
`input_gradient`, `weight_gradient` on random data) and the per-step total of the 3x3 layers.
Run it from two checkouts to compare kernels; BENCHMARKS.md records what it measured.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import onednn

# (batch, input height = width, in channels, out channels, stride, occurrences per network)
LAYERS = {
    "resnet50": [(16, 56, 64, 64, 1, 3), (16, 56, 128, 128, 2, 1), (16, 28, 128, 128, 1, 3),
                 (16, 28, 256, 256, 2, 1), (16, 14, 256, 256, 1, 5), (16, 14, 512, 512, 2, 1),
                 (16, 7, 512, 512, 1, 2)],
    "resnet20": [(128, 32, 16, 16, 1, 6), (128, 32, 16, 32, 2, 1), (128, 16, 32, 32, 1, 5),
                 (128, 16, 32, 64, 2, 1), (128, 8, 64, 64, 1, 5)],
}
PADDING = ((1, 1), (1, 1))


def median_ms(f, *args, repeats):
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet50,resnet20")
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for model in args.models.split(","):
        totals = np.zeros(3)
        print(f"{model}: {'layer':<22} {'forward':>8} {'input gr':>8} {'weight gr':>9}  (ms)")
        for n, size, cin, cout, stride, count in LAYERS[model]:
            strides = (stride, stride)
            out = (size + 2 - 3) // stride + 1
            x = jnp.asarray(rng.standard_normal((n, size, size, cin)), jnp.float32)
            w = jnp.asarray(rng.standard_normal((3, 3, cin, cout)), jnp.float32)
            dy = jnp.asarray(rng.standard_normal((n, out, out, cout)), jnp.float32)
            ms = np.array([
                median_ms(jax.jit(lambda x, w: onednn.forward(x, w, strides, PADDING)), x, w,
                          repeats=args.repeats),
                median_ms(jax.jit(lambda dy, w: onednn.input_gradient(
                    dy, w, x.shape, strides, PADDING)), dy, w, repeats=args.repeats),
                median_ms(jax.jit(lambda x, dy: onednn.weight_gradient(
                    x, dy, w.shape, strides, PADDING)), x, dy, repeats=args.repeats)])
            totals += count * ms
            layer = f"{size}x{size} {cin}->{cout}/{stride} x{count}"
            print(f"{model}: {layer:<22} {ms[0]:8.1f} {ms[1]:8.1f} {ms[2]:9.1f}")
        print(f"{model}: {'3x3 layers per step':<22} {totals[0]:8.0f} {totals[1]:8.0f} "
              f"{totals[2]:9.0f}")


if __name__ == "__main__":
    main()
