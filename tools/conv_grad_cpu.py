"""Where the JAX training step loses on XLA:CPU: one conv layer's forward, input and weight
gradients, against torch's whole forward+backward of the same layer.

    python tools/conv_grad_cpu.py [--batch 128] [--size 32] [--channels 16]

Prints milliseconds for: forward; input gradient; weight gradient as XLA lowers it (a
convolution whose window is the whole image and whose features are the batch); two manual
formulations of the weight gradient (im2col slices + one matmul; 9 per-offset matmuls; the
package's im2col blocks in a scan, `resnet_jax.conv`); and
torch (channels-last) forward + backward. BENCHMARKS.md records what it measured.
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from resnet_jax import conv as conv_ops


def bench(f, *args, n=5):
    jax.block_until_ready(f(*args))
    start = time.perf_counter()
    for _ in range(n):
        out = f(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / n * 1000


def conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def weight_grad_im2col(x, dy):
    """Patches by 9 slices of the padded input, stacked, then one (K, N) x (N, O) matmul."""
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    _, height, width, channels = x.shape
    patches = jnp.stack([xp[:, i:i + height, j:j + width] for i in range(3) for j in range(3)],
                        axis=3)  # (B, H, W, 9, C)
    grad = jnp.dot(patches.reshape(-1, 9 * channels).T, dy.reshape(-1, dy.shape[-1]))
    return grad.reshape(3, 3, channels, -1)


def weight_grad_offsets(x, dy):
    """One (C, N) x (N, O) matmul per kernel offset, no patch matrix."""
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    _, height, width, channels = x.shape
    dy2 = dy.reshape(-1, dy.shape[-1])
    return jnp.stack([jnp.stack([
        jnp.dot(xp[:, i:i + height, j:j + width].reshape(-1, channels).T, dy2)
        for j in range(3)]) for i in range(3)])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=16)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.batch, args.size, args.size, args.channels)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, args.channels, args.channels)), jnp.float32)
    dy = jnp.ones(shape, jnp.float32)
    grad_x = jax.jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy)[0])
    grad_w = jax.jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy)[1])
    reference = grad_w(x, w, dy)
    print(f"layer {shape} 3x3 -> {args.channels} channels, float32, "
          f"{jax.devices()[0].device_kind}")
    print(f"jax forward            {bench(jax.jit(conv), x, w):8.1f} ms")
    print(f"jax input gradient     {bench(grad_x, x, w, dy):8.1f} ms")
    print(f"jax weight gradient    {bench(grad_w, x, w, dy):8.1f} ms  (XLA's lowering)")
    blocks = functools.partial(conv_ops.patches_weight_gradient, kernel_shape=w.shape,
                               strides=(1, 1), padding=((1, 1), (1, 1)))
    for name, fn in (("im2col + matmul", weight_grad_im2col),
                     ("per-offset matmuls", weight_grad_offsets),
                     ("im2col blocks, scan", blocks)):
        error = float(jnp.abs(fn(x, dy) - reference).max() / jnp.abs(reference).max())
        print(f"  {name:<20} {bench(jax.jit(fn), x, dy):8.1f} ms  (rel. diff {error:.1e})")
    try:
        import torch
    except ImportError:
        return
    tx = torch.randn(args.batch, args.channels, args.size, args.size).contiguous(
        memory_format=torch.channels_last).requires_grad_(True)
    layer = torch.nn.Conv2d(args.channels, args.channels, 3, 1, 1, bias=False)

    def step():
        out = layer(tx)
        out.backward(torch.ones_like(out))
    step()
    start = time.perf_counter()
    for _ in range(5):
        step()
    print(f"torch forward+backward {(time.perf_counter() - start) / 5 * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
