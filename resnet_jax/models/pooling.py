"""Max pooling whose gradient XLA:CPU computes several times faster than its own.

JAX differentiates `lax.reduce_window(max)` into XLA's select-and-scatter, which XLA:CPU runs as
a scalar loop, several times slower than PyTorch's pool backward on the ResNet stem.
`max_pool` instead records, in the forward pass, which offset of each window holds its first
maximum (row-major order, as torch and select-and-scatter choose), from the same loaded values
that give the maximum; the backward pass sends each window's gradient to that offset with dense
array operations (an interior-padded `lax.pad` per offset, all summed in one fused loop), or,
with `native_backward` (the CPU kernels seam), with one loop in the CPU extension (faster
still; BENCHMARKS.md).
Comparing the input with the pooled output in the backward pass instead would be fragile: XLA
may recompute a fused producer (batch norm, ReLU) with different rounding in two places, and a
maximum would then fail to equal itself.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


def _windows(x, window, strides, padding):
    """The (offset, values) pairs of every window offset, row-major: values[n, r, c, ch] is
    the input pixel at that offset of output pixel (r, c)'s window (-inf in the padding)."""
    (kh, kw), (sh, sw), ((top, bottom), (left, right)) = window, strides, padding
    x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-jnp.inf)
    oh = (x.shape[1] - kh) // sh + 1
    ow = (x.shape[2] - kw) // sw + 1
    return [((i, j), x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :])
            for i in range(kh) for j in range(kw)]


def _max_and_first_argmax(x, window, strides, padding):
    (_, best), *rest = _windows(x, window, strides, padding)
    index_dtype = jnp.int8 if len(rest) < 127 else jnp.int32
    first = jnp.zeros(best.shape, index_dtype)
    for k, (_, values) in enumerate(rest, start=1):
        better = values > best  # strictly: ties keep the earlier offset
        best = jnp.where(better, values, best)
        first = jnp.where(better, jnp.asarray(k, index_dtype), first)
    return best, first


def max_pool(x, window, strides, padding, native_backward=None):
    """Max pooling of NHWC `x`: window (kh, kw), strides (sh, sw), padding ((lo, hi), (lo, hi))
    with -inf, as `flax.linen.max_pool` does. `native_backward`: a kernel with the signature of
    the CPU extension's `max_pool_backward`, used for float32 input (the kernels seam's choice)."""
    return _max_pool(x, tuple(window), tuple(strides), tuple(map(tuple, padding)), x.shape,
                     native_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5))
def _max_pool(x, window, strides, padding, x_shape, native_backward):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1),
                             ((0, 0), *padding, (0, 0)))


def _max_pool_fwd(x, window, strides, padding, x_shape, native_backward):
    return _max_and_first_argmax(x, window, strides, padding)


def _max_pool_bwd(window, strides, padding, x_shape, native_backward, first, dy):
    if native_backward is not None and dy.dtype == jnp.float32 and first.dtype == jnp.int8:
        return (native_backward(first, dy, x_shape, window, strides, padding),)
    (kh, kw), (sh, sw), ((top, bottom), (left, right)) = window, strides, padding
    padded_h, padded_w = x_shape[1] + top + bottom, x_shape[2] + left + right
    _, oh, ow, _ = dy.shape
    zero = jnp.zeros((), dy.dtype)
    dx_padded = None
    for k, (i, j) in enumerate((i, j) for i in range(kh) for j in range(kw)):
        # Window offset (i, j) of output pixel (r, c) is padded input pixel (i + sh*r, j + sw*c).
        spread = ((0, 0, 0), (i, padded_h - i - sh * (oh - 1) - 1, sh - 1),
                  (j, padded_w - j - sw * (ow - 1) - 1, sw - 1), (0, 0, 0))
        term = lax.pad(jnp.where(first == k, dy, zero), zero, spread)
        dx_padded = term if dx_padded is None else dx_padded + term
    return (dx_padded[:, top:top + x_shape[1], left:left + x_shape[2], :],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
