"""Convolutions for XLA:CPU: an im2col-block weight gradient, and the extension's convolutions.

Both are drop-ins for `lax.conv_general_dilated` (what `flax.linen.Conv` calls), reached through
the kernels seam (`resnet_jax.cpu`'s "patches" and "native" kernels).

XLA lowers a convolution's weight gradient to another convolution whose window is the whole
image and whose "features" are the batch, a shape XLA:CPU runs an order of magnitude slower than
the forward pass. The same gradient is a sum over images of `patches^T @ dy`, where `patches`
(im2col) holds each output pixel's receptive field. Materialising all the patches at once is
memory-bound; building them a few images at a time in a `lax.scan`, so each block stays in
cache, and multiplying block by block is several times faster (BENCHMARKS.md has the figures).

`conv_general_dilated`: the forward pass and the input gradient are XLA's own; only the weight
gradient is computed as above, for the convolutions ResNets use (NHWC/HWIO, no dilation).
Anything else goes to `lax.conv_general_dilated` unchanged. On GPUs and TPUs XLA's own weight
gradient is the fast one, and the seam never picks this there.

`native_conv_general_dilated`: all three computations (forward pass, input and weight
gradients) by the extension (`resnet_jax.cpu.extension`, oneDNN), for float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from resnet_jax.cpu import extension

_NHWC = ("NHWC", "HWIO", "NHWC")
# Patches of this many bytes per scan step: the block stays in the CPU's L2/L3 caches.
_BLOCK_BYTES = 1 << 20


def _lax_conv(x, w, strides, padding, groups):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC,
                                    feature_group_count=groups)


def patches_weight_gradient(x, dy, kernel_shape, strides, padding, groups=1):
    """d(loss)/d(kernel) of an NHWC/HWIO convolution, from its input `x` and output gradient
    `dy`, as a scan over blocks of images of (im2col patches)^T @ dy."""
    kh, kw, cin_per_group, cout = kernel_shape
    n, oh, ow, _ = dy.shape
    sh, sw = strides
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    patch_bytes = oh * ow * kh * kw * x.shape[-1] * x.dtype.itemsize  # per image
    # A 1x1 kernel's "patches" are its input: no im2col blow-up, larger blocks pay (measured).
    budget = _BLOCK_BYTES * (16 if kh * kw == 1 else 1)
    block = max(d for d in range(1, n + 1) if n % d == 0 and (d == 1 or
                                                             d * patch_bytes <= budget))
    x = x.reshape(n // block, block, *x.shape[1:])
    dy = dy.reshape(n // block, block * oh * ow, cout)
    accumulate_dtype = jnp.promote_types(x.dtype, jnp.float32)

    def step(total, inputs):
        xb, dyb = inputs  # (block, H, W, C), (block*oh*ow, cout)
        patches = jnp.concatenate(
            [xb[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
             for i in range(kh) for j in range(kw)], axis=-1)  # (block, oh, ow, kh*kw*C)
        if groups == 1:  # (kh*kw*C, pixels) @ (pixels, cout): XLA:CPU's fastest form
            grad = jnp.dot(patches.reshape(-1, kh * kw * cin_per_group).T, dyb,
                           preferred_element_type=accumulate_dtype)
        else:  # contract the pixels, batch over groups: (G, kh*kw, C/G, cout/G)
            patches = patches.reshape(-1, kh * kw, groups, cin_per_group)
            grad = lax.dot_general(patches, dyb.reshape(-1, groups, cout // groups),
                                   (((0,), (0,)), ((2,), (1,))),
                                   preferred_element_type=accumulate_dtype)
            grad = jnp.moveaxis(grad, 0, 2)  # (kh*kw, C/G, G, cout/G)
        return total + grad.reshape(kh * kw * cin_per_group, cout), None

    init = jnp.zeros((kh * kw * cin_per_group, cout), accumulate_dtype)
    total, _ = lax.scan(step, init, (x, dy))
    return total.reshape(kh, kw, cin_per_group, cout)  # HWIO


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, padding, groups):
    return _lax_conv(x, w, strides, padding, groups)


def _conv_fwd(x, w, strides, padding, groups):
    return _lax_conv(x, w, strides, padding, groups), (x, w)


def _conv_bwd(strides, padding, groups, residuals, dy):
    x, w = residuals
    _, input_vjp = jax.vjp(lambda x: _lax_conv(x, w, strides, padding, groups), x)
    dw = patches_weight_gradient(x, dy, w.shape, strides, padding, groups)
    return input_vjp(dy)[0], dw.astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _native_conv(x, w, strides, padding, groups):
    return extension.forward(x, w, strides, padding, groups)


def _native_conv_fwd(x, w, strides, padding, groups):
    return extension.forward(x, w, strides, padding, groups), (x, w)


def _native_conv_bwd(strides, padding, groups, residuals, dy):
    x, w = residuals
    return (extension.input_gradient(dy, w, x.shape, strides, padding, groups),
            extension.weight_gradient(x, dy, w.shape, strides, padding, groups))


_native_conv.defvjp(_native_conv_fwd, _native_conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated`, with the patches weight gradient where it applies."""
    if not _plain(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                  batch_group_count, precision, preferred_element_type):
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)
    return _conv(lhs, rhs, tuple(window_strides), tuple(map(tuple, padding)),
                 feature_group_count)


def native_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                                rhs_dilation=None, dimension_numbers=None,
                                feature_group_count=1, batch_group_count=1, precision=None,
                                preferred_element_type=None):
    """`lax.conv_general_dilated` computed by oneDNN (forward pass and both gradients) for
    float32 NHWC/HWIO convolutions; other dtypes and forms go to `conv_general_dilated`.
    Raises `extension.ExtensionUnavailable` where the extension cannot be built."""
    args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)
    if not (_plain(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                   batch_group_count, precision, preferred_element_type)
            and lhs.dtype == rhs.dtype == jnp.float32):
        return conv_general_dilated(*args)
    return _native_conv(lhs, rhs, tuple(window_strides), tuple(map(tuple, padding)),
                        feature_group_count)


def _plain(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
           batch_group_count, precision, preferred_element_type) -> bool:
    """A convolution of the form this module handles: NHWC/HWIO, explicit padding, no
    dilation, default precision and output type."""
    return (lhs.ndim == 4 and not isinstance(padding, str) and batch_group_count == 1
            and precision is None and preferred_element_type is None
            and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
            and _is_nhwc(dimension_numbers, lhs.shape, rhs.shape))


def _is_nhwc(dimension_numbers, lhs_shape, rhs_shape) -> bool:
    if dimension_numbers is None:
        return False
    wanted = lax.conv_dimension_numbers(lhs_shape, rhs_shape, _NHWC)
    given = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    return given == wanted
