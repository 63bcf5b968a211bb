"""Training-mode batch norm by the CPU extension, fused with what follows it in a block.

`NativeBatchNorm` is `resnet_jax.models.BatchNorm` (same variables, same eval path) whose
training normalisation returns a `DeferredNorm`: the block's `+ shortcut` and `relu` extend it,
and the extension's batch-norm loops then compute normalisation, addition and ReLU in one pass,
and read the ReLU's mask from the output in the backward pass. Cases the loops do not cover
(batch-norm groups, one-pass variance, other dtypes) take the portable path.
"""

from __future__ import annotations

import jax.numpy as jnp

from resnet_jax.cpu import extension
from resnet_jax.models.layers import BatchNorm, DeferredNorm


class NativeBatchNorm(BatchNorm):
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
