"""The one seam through which faster kernels reach the models.

A model names its kernels (`kernels="xla"`, the default, or another registered name); the name
resolves to a `Kernels`: the convolution that `flax.linen.Conv` calls, the batch-norm
layer class, the activation and the max pool. A block reads `activation(norm(conv(y)) +
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


@functools.cache
def _resolve(name, dtype, backend, device_count) -> Kernels:
    # backend and device count are part of the cache key: "auto" depends on them.
    return _CHOOSERS.get(name, _CHOOSERS["xla"])(dtype)
