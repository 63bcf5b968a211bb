"""The one seam through which faster kernels reach the models.

A model names its kernels (`kernels="xla"`, the default, or another registered name); the name
resolves to a `Kernels`: the convolution that `flax.linen.Conv` calls, the batch-norm
layer class, the activation, the max pool and the convolution layer, and how eval-mode
variables are prepared (`for_inference`). A block reads `activation(norm(conv(y)) +
shortcut)`; a seam may fuse the normalisation, the addition and the activation (its norm
returning a value that its `+` and its activation complete: `resnet_jax.cpu.norm`), which the
model code does not see. The portable `XLA` kernels are plain lax and Flax, run on every
backend and export with `jax.export`. Other packages register more (`resnet_jax.cpu`: "native",
"patches", and what "auto" picks on each machine); the model code never changes with them.

`RESNET_JAX_KERNELS` (environment) says what "auto" means: unset or "auto" lets the registered
chooser pick; "xla" keeps every model portable and nothing builds or loads an extension.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import jax
from flax import linen as nn

from resnet_jax.errors import UserError
from resnet_jax.models import pooling
from resnet_jax.models.layers import BatchNorm

ENVIRONMENT_VARIABLE = "RESNET_JAX_KERNELS"


def portable_max_pool(x, window, strides, padding):
    """Flax's max pool; on the CPU backend with the first-maximum gradient of
    `models.pooling` (XLA:CPU's select-and-scatter is slow there, and routes float32 gradients
    wrongly when XLA recomputes the fused producer with other rounding)."""
    if jax.default_backend() == "cpu" and not isinstance(padding, str):  # explicit pads only
        return pooling.max_pool(x, window, strides, padding)
    return nn.max_pool(x, window, strides=strides, padding=padding)


@dataclasses.dataclass(frozen=True)
class Kernels:
    """Who computes a ResNet's convolutions, its batch norm, its activation and its max pool."""

    name: str
    # The convolution flax.linen.Conv runs, with lax.conv_general_dilated's signature; None:
    # lax's own.
    convolution: Callable | None = None
    norm: type[BatchNorm] = BatchNorm
    max_pool: Callable = portable_max_pool  # (x, window, strides, padding)
    activation: Callable = nn.relu  # of whatever `norm` (plus a shortcut) returns
    conv_layer: type[nn.Conv] = nn.Conv  # the convolution layer (it calls `convolution`)
    # What the layers above return (e.g. activations in a kernel's own layout) as an NHWC
    # array, where the model hands it to anything else.
    as_array: Callable = lambda x: x
    # (model, variables, image shape) -> the variables eval-mode use runs fastest with (e.g.
    # batch norm folded into the convolutions); None: the variables as they are.
    prepare: Callable | None = None


XLA = Kernels("xla")

# name -> (compute dtype -> Kernels). "auto" may be registered by a package that knows its
# machine; unregistered, it is XLA.
_CHOOSERS: dict[str, Callable[[Any], Kernels]] = {"xla": lambda dtype: XLA}


def register(name: str, choose: Callable[[Any], Kernels]) -> None:
    """Makes `name` a valid `kernels` value: `choose(dtype)` returns the Kernels to use."""
    _CHOOSERS[name] = choose


def names() -> tuple[str, ...]:
    return tuple(sorted({"auto", *_CHOOSERS}))


def check_name(name: str) -> None:
    if name not in names():
        raise UserError(f"kernels must be one of {', '.join(names())}, got {name!r}")


def resolve(name: str, dtype) -> Kernels:
    """The Kernels that `name` means for computation in `dtype` on this process's backend."""
    check_name(name)
    if name == "auto":
        name = os.environ.get(ENVIRONMENT_VARIABLE, "auto") or "auto"
        if name not in names():
            raise UserError(f"{ENVIRONMENT_VARIABLE}={name!r} is not a kernels name; valid: "
                            f"{', '.join(names())}")
    return _resolve(name, jax.numpy.dtype(dtype), jax.default_backend(), jax.device_count())


def for_inference(model, variables: dict, image_shape) -> dict:
    """`variables` (host arrays) as `model`'s kernels run eval mode fastest, for images of
    `image_shape` (H, W, C): what evaluation, prediction, embedding and serving apply. The
    same results as the variables as they are, within float32 rounding; never for training
    or for saving."""
    kernels = resolve(model.kernels, model.dtype)
    return variables if kernels.prepare is None else kernels.prepare(model, variables,
                                                                     image_shape)


@functools.cache
def _resolve(name, dtype, backend, device_count) -> Kernels:
    # backend and device count are part of the cache key: "auto" depends on them.
    return _CHOOSERS.get(name, _CHOOSERS["xla"])(dtype)
