"""The layers a ResNet is built from, with torchvision's semantics: initialisers, padding,
batch normalisation, and the ReLU that ends a block.

Where a naive Flax port differs from torchvision, this follows torchvision:
- explicit symmetric padding (k//2) on every conv and on the 3x3/2 max-pool: 'SAME' pads (0, 1)
  on even inputs when strided;
- `BatchNorm` keeps torch's running statistics (momentum 0.1 on the new batch, *unbiased* running
  variance) and computes its statistics in at least float32, two-pass (mean, then centred squares);
- Kaiming-normal (fan-out) conv init and torch's default Linear init.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from resnet_jax.errors import UserError

Dtype = Any

# torchvision: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"), not truncated.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Linear's default: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
dense_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def dense_bias_init(fan_in: int) -> Callable:
    """torch.nn.Linear's default bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def symmetric_padding(kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """torch's padding=k//2 on both sides (Flax's 'SAME' pads strided windows unevenly)."""
    return ((kernel_size // 2, kernel_size // 2),) * 2


def batch_moments(x, one_pass: bool = False, axes=None):
    """Mean and biased variance of `x` over `axes` (default: all but the channel axis), kept as
    size-1 dimensions.

    Two-pass (E[(x - mean)^2]) by default. One pass (E[x^2] - mean^2) reads the activations
    once instead of twice, which pays on memory-bound accelerators, but its cancellation costs
    digits: fine for 16-bit compute (whose inputs carry 3 digits), not for a float32 reference.
    """
    axes = tuple(range(x.ndim - 1)) if axes is None else tuple(axes)
    mean = jnp.mean(x, axis=axes, keepdims=True)
    if one_pass:
        square_mean = jnp.mean(jnp.square(x), axis=axes, keepdims=True)
        return mean, jnp.maximum(square_mean - jnp.square(mean), 0.0)
    return mean, jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)


class BatchNorm(nn.Module):
    """Batch normalisation with `torch.nn.BatchNorm2d` semantics, state in `batch_stats`.

    `momentum` uses torch's convention: the weight of the *new* batch statistic (Flax's
    `nn.BatchNorm(momentum=0.9)` is torch's 0.1). The running variance is updated with the
    unbiased batch variance, normalisation uses the biased one, exactly as torch does.

    Statistics are computed in `float32` (or float64 if params are float64) whatever the compute
    `dtype`. The variance is two-pass, E[(x - mean)^2], for float32/float64 compute: the one-pass
    E[x^2] - mean^2 cancels when the mean is large against the spread (post-ReLU activations
    are all positive). `one_pass_variance=None` (auto) uses one pass only
    for 16-bit compute, where it saves a read of every activation and its error stays far below
    the data's own bfloat16 rounding.

    `group_size` ("ghost" batch norm): in training, statistics over consecutive groups of that
    many examples instead of the whole (global) batch, as PyTorch DDP's per-GPU BatchNorm and
    MLPerf's BN groups do, whatever the device count. The running statistics move towards the
    mean of the groups' statistics (mean of means, mean of unbiased variances), so a batch of G
    groups updates them as G ordinary batches averaged would.

    Kernels (`resnet_jax.models.kernels`) may subclass it to compute `normalize_batch` faster.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    scale_init: Callable = nn.initializers.ones
    one_pass_variance: bool | None = None
    group_size: int | None = None

    @nn.compact
    def __call__(self, x, *, train: bool):
        features = x.shape[-1]
        stat_dtype = self.stat_dtype
        scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        running_mean = self.variable(
            "batch_stats", "mean", lambda: jnp.zeros((features,), stat_dtype))
        running_var = self.variable(
            "batch_stats", "var", lambda: jnp.ones((features,), stat_dtype))
        if train:
            return self.normalize_batch(x, scale, bias, running_mean, running_var)
        return self.normalize(x, running_mean.value, running_var.value, scale, bias)

    @property
    def stat_dtype(self):
        return jnp.promote_types(self.param_dtype, jnp.float32)

    @property
    def uses_one_pass_variance(self) -> bool:
        if self.one_pass_variance is None:
            return jnp.dtype(self.dtype).itemsize < 4
        return self.one_pass_variance

    def normalize_batch(self, x, scale, bias, running_mean, running_var):
        """Training: normalise by the batch's (or each group's) statistics, update the running
        ones."""
        group = self.group_size or x.shape[0]
        if x.shape[0] % group:
            raise UserError(f"batch-norm group size {group} does not divide the batch of "
                            f"{x.shape[0]}")
        x_stat = x.astype(self.stat_dtype).reshape(x.shape[0] // group, group, *x.shape[1:])
        mean, var = batch_moments(x_stat, self.uses_one_pass_variance,
                                  axes=range(1, x_stat.ndim - 1))  # (G, 1, ..., C)
        self.update_running(running_mean, running_var, mean, var,
                            x.size // x.shape[-1] // x_stat.shape[0])
        return self.normalize(x_stat, mean, var, scale, bias).reshape(x.shape)

    def normalize(self, x, mean, var, scale, bias):
        stat_dtype = self.stat_dtype
        multiplier = jax.lax.rsqrt(var + self.epsilon) * scale.astype(stat_dtype)
        y = (x.astype(stat_dtype) - mean) * multiplier + bias.astype(stat_dtype)
        return y.astype(self.dtype)

    def update_running(self, running_mean, running_var, mean, var, n):
        """Moves the running averages towards the groups' mean and biased variance (shaped
        (G, ..., C), `n` values per channel in a group), with torch's unbiased variance."""
        if self.is_initializing():
            return
        unbiased_var = var * (n / max(n - 1, 1))
        over_groups = tuple(range(mean.ndim - 1))
        m = self.momentum
        running_mean.value = (1 - m) * running_mean.value + m * jnp.mean(mean, axis=over_groups)
        running_var.value = ((1 - m) * running_var.value +
                             m * jnp.mean(unbiased_var, axis=over_groups))
