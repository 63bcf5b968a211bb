"""Training-mode batch norm by the CPU extension, fused with what follows it in a block.

`NativeBatchNorm` is `resnet_jax.models.BatchNorm` (same variables, same eval path) whose
training normalisation returns a `DeferredNorm`: the block's `+ shortcut` and the seam's
`activation` (this module's, `Kernels.activation`) extend it,
and the extension's batch-norm loops then compute normalisation, addition and ReLU in one pass,
and read the ReLU's mask from the output in the backward pass. Cases the loops do not cover
(batch-norm groups, one-pass variance, other dtypes) take the portable path.
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp
from flax import linen as nn

from resnet_jax.cpu import extension
from resnet_jax.models.layers import BatchNorm


class DeferredNorm(abc.ABC):
    """A training-mode normalisation that the kernel computes together with what follows it
    in a block (`+ shortcut`, then the activation), in one pass over memory. `+` and
    `activation` extend it; anything else (a product, as in stochastic depth) computes it."""

    x: jax.Array  # the normalisation's input: its output has the same shape and dtype

    @abc.abstractmethod
    def add(self, other) -> DeferredNorm | jax.Array:
        """This normalisation plus `other` (an array of the same shape)."""

    @abc.abstractmethod
    def finish(self, relu: bool = False) -> jax.Array:
        """The array, with a ReLU applied if `relu`."""

    @property
    def shape(self):
        return self.x.shape

    @property
    def ndim(self):
        return self.x.ndim

    @property
    def dtype(self):
        return self.x.dtype

    def __add__(self, other):
        return self.add(finished(other))

    __radd__ = __add__

    def __mul__(self, other):
        return self.finish() * other

    __rmul__ = __mul__


def finished(x):
    """`x` as an array (a `DeferredNorm` computed now)."""
    return x.finish() if isinstance(x, DeferredNorm) else x


def activation(x):
    """ReLU; on a `DeferredNorm`, fused into its kernel (the seam's `Kernels.activation`)."""
    return x.finish(relu=True) if isinstance(x, DeferredNorm) else nn.relu(x)


class NativeBatchNorm(BatchNorm):
    def __call__(self, x, *, train: bool):
        if isinstance(x, DeferredNorm):
            # A convolution with this batch norm folded in (`resnet_jax.cpu.fused`): its
            # variables were prepared for inference, never for training.
            if train:
                raise RuntimeError(f"{'/'.join(self.path)}: variables prepared for inference "
                                   "(resnet_jax.cpu.fused.prepare) used in training")
            return x
        return super().__call__(x, train=train)

    def normalize_batch(self, x, scale, bias, running_mean, running_var):
        whole_batch = self.group_size in (None, x.shape[0])
        if not (whole_batch and not self.uses_one_pass_variance
                and x.dtype == scale.dtype == bias.dtype == jnp.float32):
            return super().normalize_batch(x, scale, bias, running_mean, running_var)
        return _DeferredBatchNorm(self, x, scale, bias, running_mean, running_var)


class _DeferredBatchNorm(DeferredNorm):
    def __init__(self, layer, x, scale, bias, running_mean, running_var, residual=None):
        self.layer, self.x, self.scale, self.bias = layer, x, scale, bias
        self.running = (running_mean, running_var)
        self.residual = residual

    def add(self, other):
        if self.residual is not None or other.shape != self.x.shape or other.dtype != jnp.float32:
            return self.finish() + other  # not a form the kernel fuses
        return _DeferredBatchNorm(self.layer, self.x, self.scale, self.bias, *self.running,
                                  residual=other)

    def finish(self, relu: bool = False):
        y, mean, var = extension.batch_norm_train(self.x, self.scale, self.bias,
                                                  self.layer.epsilon, relu, self.residual)
        self.layer.update_running(*self.running, mean[None], var[None],
                                  self.x.size // self.x.shape[-1])
        return y
