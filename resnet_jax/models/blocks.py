"""Residual blocks (He et al. 2015, Fig. 2 and 5): y = relu(F(x) + shortcut(x)).

`conv` and `norm` are constructors and `activation` a function handed down by `ResNet` (which
knows the dtypes, the initialisers and the kernels); the blocks only say what the paper says.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

ModuleDef = Any


def zero_pad_shortcut(x, features: int, strides: int):
    """Identity shortcut with zero padding ("option A", paper section 4.2): no parameters.

    Subsamples by `strides` and pads the new channels with zeros, half on each side, as the
    common PyTorch CIFAR ResNets do.
    """
    x = x[:, ::strides, ::strides, :]  # (B, H/s, W/s, C)
    extra = features - x.shape[-1]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


def drop_path(module: nn.Module, branch, rate: float):
    """Stochastic depth as timm's `drop_path`: in training, each example's residual branch is
    kept with probability 1 - rate and then scaled by 1 / (1 - rate), else zeroed (the block
    is its shortcut); the expected output is the branch's. Draws from the "dropout" rng."""
    if rate == 0.0:
        return branch
    keep = 1.0 - rate
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep,
                                (branch.shape[0],) + (1,) * (branch.ndim - 1))
    return branch * (mask.astype(branch.dtype) / jnp.asarray(keep, branch.dtype))


class Downsample(nn.Module):
    """Projection shortcut ("option B"): 1x1 strided conv + BN (torchvision's `downsample`)."""

    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x):
        return self.norm(name="bn")(self.conv(self.features, 1, self.strides, name="conv")(x))


def shortcut(x, features: int, strides: int, kind: str, conv: ModuleDef, norm: ModuleDef):
    """The residual branch's partner: identity, option A (zero pad) or option B (projection).

    Called inside a block's `@nn.compact` method, so the projection is named `downsample` in the
    block's own scope, as torchvision names it.
    """
    if x.shape[-1] == features and strides == 1:
        return x
    if kind == "A":
        return zero_pad_shortcut(x, features, strides)
    return Downsample(features, strides, conv, norm, name="downsample")(x)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR ResNets). `shortcut=None` makes it plain."""

    features: int
    strides: int
    shortcut: str | None
    conv: ModuleDef
    norm: ModuleDef
    last_norm: ModuleDef  # `norm`, or with zero-initialised scale (zero_init_residual)
    groups: int = 1
    width_per_group: int = 64
    drop_path: float = 0.0  # stochastic depth rate (training only; see `drop_path`)
    activation: ModuleDef = nn.relu
    expansion = 1

    @nn.compact
    def __call__(self, x):
        y = self.norm(name="bn1")(self.conv(self.features, 3, self.strides, name="conv1")(x))
        y = self.activation(y)
        y = self.last_norm(name="bn2")(self.conv(self.features, 3, 1, name="conv2")(y))
        y = drop_path(self, y, self.drop_path)
        if self.shortcut is None:  # the paper's plain network
            return self.activation(y)
        return self.activation(y + shortcut(x, self.features, self.strides, self.shortcut,
                                            self.conv, self.norm))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, groups) -> 1x1 x4: ResNet-50 v1.5, ResNeXt and Wide ResNet."""

    features: int
    strides: int
    shortcut: str | None
    conv: ModuleDef
    norm: ModuleDef
    last_norm: ModuleDef
    groups: int = 1
    width_per_group: int = 64
    drop_path: float = 0.0
    activation: ModuleDef = nn.relu
    expansion = 4

    @nn.compact
    def __call__(self, x):
        width = int(self.features * (self.width_per_group / 64.0)) * self.groups
        y = self.activation(self.norm(name="bn1")(self.conv(width, 1, 1, name="conv1")(x)))
        # v1.5: the stride sits on the 3x3 conv, not on the first 1x1.
        y = self.activation(self.norm(name="bn2")(
            self.conv(width, 3, self.strides, groups=self.groups, name="conv2")(y)))
        y = self.last_norm(name="bn3")(self.conv(self.features * 4, 1, 1, name="conv3")(y))
        y = drop_path(self, y, self.drop_path)
        if self.shortcut is None:
            return self.activation(y)
        return self.activation(y + shortcut(x, self.features * 4, self.strides, self.shortcut,
                                            self.conv, self.norm))
