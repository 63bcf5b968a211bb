"""The package's CPU kernels, reached only through the models' kernels seam.

Registers two `kernels` names with `resnet_jax.models.kernels`, and what "auto" picks:
- "patches": pure JAX; convolution weight gradients as im2col blocks (`conv`), a form XLA:CPU
  runs faster than its own (the max pool's dense-array gradient is the portable kernels' too).
- "native": the C++ extension (`extension`, built on first use against oneDNN): convolutions
  forward and backward, batch norm fused with the residual addition and ReLU (`norm`), the max
  pool's gradient; float32 on the CPU backend. Other dtypes fall back to "patches". For
  inference (`models.kernels.for_inference`), batch norm folded into the convolutions and
  the block's addition and ReLU fused into them (`fused`).
- "auto": on the CPU backend, "native" for float32 on one device ("patches" where the extension
  cannot be built, with a warning once), "patches" otherwise (the extension's custom calls
  cannot be partitioned over several devices); XLA's own on GPUs and TPUs.
Models that use either are not exportable with `jax.export` (custom calls); export builds the
same model with kernels="xla".
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp

from resnet_jax.cpu import conv, extension, fused
from resnet_jax.cpu.norm import NativeBatchNorm
from resnet_jax.models import kernels as seam
from resnet_jax.models import pooling


def _native_max_pool(x, window, strides, padding):
    return pooling.max_pool(x, window, strides, padding,
                            native_backward=extension.max_pool_backward)


def _native_or_blocked_max_pool(x, window, strides, padding):
    return fused.max_pool(x, window, strides, padding, fallback=_native_max_pool)


PATCHES = seam.Kernels("patches", convolution=conv.conv_general_dilated)
NATIVE = seam.Kernels("native", convolution=conv.native_conv_general_dilated,
                      norm=NativeBatchNorm, max_pool=_native_or_blocked_max_pool,
                      activation=fused.activation, conv_layer=fused.FusableConv,
                      prepare=fused.prepare, as_array=fused.as_array)


def choose_native(dtype) -> seam.Kernels:
    reason = extension.unavailable_reason()
    if reason is not None:
        raise extension.ExtensionUnavailable(
            f"kernels='native': {reason}; use kernels='auto' or 'xla'")
    return NATIVE if jnp.dtype(dtype) == jnp.float32 else PATCHES


def choose_auto(dtype) -> seam.Kernels:
    if jax.default_backend() != "cpu":
        return seam.XLA
    if jnp.dtype(dtype) != jnp.float32 or jax.device_count() > 1:
        return PATCHES
    return NATIVE if _extension_or_warn() else PATCHES


@functools.cache
def _extension_or_warn() -> bool:
    reason = extension.unavailable_reason()
    if reason is not None and extension.SUPPORTED_PLATFORM:  # elsewhere "patches" is the plan
        warnings.warn(f"the CPU extension is unavailable ({reason}); using the 'patches' "
                      "kernels, about 2x slower on the CPU", stacklevel=2)
    return reason is None


seam.register("patches", lambda dtype: PATCHES)
seam.register("native", choose_native)
seam.register("auto", choose_auto)
