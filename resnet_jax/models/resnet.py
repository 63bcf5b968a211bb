"""The ResNet module: stem, stages of residual blocks, global average pool, linear classifier.

It follows torchvision's structure and parameter names (`conv1`, `bn1`, `layer1_0`,
`downsample`, `fc`) so that weights map key by key (`resnet_jax.interop`). Input is NHWC.
No training logic lives here.

One module, three outputs from the same parameters and names (timm's conventions), so the
weights of any of them load into the others:
- logits (`num_classes >= 1`);
- the globally pooled features (`num_classes=0`), torchvision's `avgpool` output flattened;
- the feature maps (`features_only=True`, `out_indices`), numbered as timm numbers them:
  0 is the stem's activation (before the ImageNet stem's max-pool), 1.. the stages
  (`layer1`..); `feature_info` gives each one's channels, reduction and torchvision name.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
from flax import linen as nn

from resnet_jax.errors import UserError
from resnet_jax.models import kernels as kernel_seam
from resnet_jax.models import parts
from resnet_jax.models.layers import (
    conv_kernel_init,
    dense_bias_init,
    dense_kernel_init,
    symmetric_padding,
)

Dtype = Any
ModuleDef = Any


class FeatureInfo(NamedTuple):
    """One feature map of `ResNet(features_only=True)`, as timm's `feature_info` describes it."""
    index: int  # timm's out_indices number
    channels: int
    reduction: int  # input size / feature map size (for sizes divisible by it)
    module: str  # the torchvision node whose output it is (create_feature_extractor's name)


class ResNet(nn.Module):
    """A ResNet.

    `stem="imagenet"`: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool (torchvision).
    `stem="cifar"`: 3x3 conv, BN, ReLU (paper section 4.2).
    `shortcut`: "B" projection where shapes change, "A" zero padding, None for plain networks.
    `kernels`: who computes convolutions, batch norm and max pool (`resnet_jax.models.kernels`):
    "xla" (portable, exportable), "auto" (the fastest this machine has), or a registered name.
    """

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    stage_widths: Sequence[int] = (64, 128, 256, 512)
    stem: str = "imagenet"
    shortcut: str | None = "B"
    num_classes: int = 1000
    in_channels: int = 3
    groups: int = 1
    width_per_group: int = 64
    zero_init_residual: bool = False
    bn_momentum: float = 0.1
    bn_epsilon: float = 1e-5
    bn_one_pass_variance: bool | None = None  # None: only for 16-bit compute (see BatchNorm)
    bn_group_size: int | None = None  # None: statistics over the whole (global) batch
    kernels: str = "xla"
    features_only: bool = False
    # with features_only; None: every feature map; an int N: the last N (timm's meaning)
    out_indices: Sequence[int] | int | None = None
    # Stochastic depth (timm's drop_path_rate): block k of n drops its residual branch with
    # probability drop_path_rate * k / (n - 1) in training (needs a "dropout" rng).
    drop_path_rate: float = 0.0
    # "stem", "layer1".. whose batch norms run in eval mode (and residual branches are never
    # dropped) even in training: the frozen parts of a fine-tuning (train/trainable.py).
    eval_mode_norms: Sequence[str] = ()
    # The classifier: "linear" (torchvision's fc), or "mlp": a hidden Dense(head_hidden) + ReLU
    # before it (Keras's small head on a frozen base). head_dropout: dropout right before fc
    # (timm's drop_rate), in training only (needs a "dropout" rng).
    head: str = "linear"
    head_hidden: int = 512
    head_dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def feature_info(self) -> tuple[FeatureInfo, ...]:
        """The feature maps `features_only` returns (all of them when out_indices is None)."""
        first = 2 if self.stem == "imagenet" else 1  # the stem's stride
        every = [FeatureInfo(0, self.stage_widths[0], first, "relu")]
        reduction = first * (2 if self.stem == "imagenet" else 1)  # the max-pool's
        for i, width in enumerate(self.stage_widths):
            reduction *= 2 if i > 0 else 1
            every.append(FeatureInfo(i + 1, width * self.block_cls.expansion, reduction,
                                     parts.stage_name(i)))
        if self.out_indices is None:
            return tuple(every)
        # as timm: an int N is the last N maps; a negative number counts from the end
        wanted = (tuple(range(-self.out_indices, 0)) if isinstance(self.out_indices, int)
                  else tuple(self.out_indices))
        bad = [i for i in wanted if not -len(every) <= i < len(every)]
        chosen = [i % len(every) for i in wanted if i not in bad]
        if bad or not wanted or len(set(chosen)) < len(chosen):
            raise UserError(f"out_indices must be distinct numbers in 0..{len(every) - 1} "
                            f"(0: the stem, 1..{len(every) - 1}: the stages; negative from the "
                            f"end), or N (the last N, 1..{len(every)}), got {self.out_indices}")
        return tuple(every[i] for i in chosen)

    @nn.compact
    def __call__(self, x, *, train: bool):
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise UserError(
                f"expected NHWC images of shape (batch, height, width, {self.in_channels}), "
                f"got shape {tuple(x.shape)}")
        if self.shortcut not in ("A", "B", None):
            raise UserError(f"shortcut must be 'A', 'B' or None, got {self.shortcut!r}")
        check_head(self.head, self.head_hidden, self.head_dropout)
        kernels = kernel_seam.resolve(self.kernels, self.dtype)

        # flax calls `conv_general_dilated_cls()` for the convolution it runs: the seam's, or
        # lax's own (None).
        conv_cls = (None if kernels.convolution is None
                    else functools.partial(lambda conv: conv, kernels.convolution))

        def conv(features, kernel_size, strides, groups=1, name=None):
            return kernels.conv_layer(features, (kernel_size, kernel_size), (strides, strides),
                           padding=symmetric_padding(kernel_size), use_bias=False,
                           feature_group_count=groups, kernel_init=conv_kernel_init,
                           dtype=self.dtype, param_dtype=self.param_dtype, name=name,
                           conv_general_dilated_cls=conv_cls)

        bn = functools.partial(kernels.norm, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                               dtype=self.dtype, param_dtype=self.param_dtype,
                               one_pass_variance=self.bn_one_pass_variance,
                               group_size=self.bn_group_size)
        def norms(part: str):
            """The norm constructors of the stem or a stage: (every norm, a block's last)."""
            mode = train and part not in self.eval_mode_norms
            norm = _in_mode(bn, mode)
            # zero_init_residual: each residual branch starts as zero, so each block as identity
            last = _in_mode(functools.partial(bn, scale_init=nn.initializers.zeros), mode) \
                if self.zero_init_residual else norm
            return norm, last

        wanted = [f.index for f in self.feature_info] if self.features_only else None
        last = max(wanted) if wanted else len(self.stage_sizes)  # later stages are not built
        x = x.astype(self.dtype)
        norm, _ = norms("stem")
        stem_conv, stem_norm = parts.STEM_MODULES
        size, stride = (7, 2) if self.stem == "imagenet" else (3, 1)
        x = kernels.activation(norm(name=stem_norm)(conv(self.stage_widths[0], size, stride,
                                                         name=stem_conv)(x)))
        feature_maps = [x]  # (B, H/2, W/2, 64) after the ImageNet stem, (B, H, W, 16) CIFAR's
        if self.stem == "imagenet" and last > 0:
            # max-pool padding is -inf, as in torch
            x = kernels.max_pool(x, (3, 3), (2, 2), symmetric_padding(3))

        rates = iter(drop_path_rates(sum(self.stage_sizes),
                                     self.drop_path_rate if train else 0.0))
        stages = list(zip(self.stage_sizes, self.stage_widths))[:last]
        for i, (num_blocks, features) in enumerate(stages):
            stage = parts.stage_name(i)
            norm, last_norm = norms(stage)
            for j in range(num_blocks):
                strides = 2 if i > 0 and j == 0 else 1
                rate = next(rates)
                x = self.block_cls(features, strides, self.shortcut, conv, norm, last_norm,
                                   groups=self.groups, width_per_group=self.width_per_group,
                                   drop_path=0.0 if stage in self.eval_mode_norms else rate,
                                   activation=kernels.activation, name=parts.block_name(i, j))(x)
            feature_maps.append(x)
        if self.features_only:
            # each (B, H/reduction, W/..., C)
            return tuple(kernels.as_array(feature_maps[i]) for i in wanted)

        x = jnp.mean(kernels.as_array(x), axis=(1, 2))  # (B, C)
        # The pooled features, kept where asked (`mutable=[POOLED[0]]`): the service's one
        # forward pass gives the logits and the embedding together. A no-op otherwise.
        self.sow(*POOLED, x)
        if self.num_classes == 0:
            return x  # the pooled features, timm's num_classes=0
        if self.head == "mlp":
            x = nn.relu(nn.Dense(self.head_hidden, dtype=self.dtype, param_dtype=self.param_dtype,
                                 kernel_init=dense_kernel_init,
                                 bias_init=dense_bias_init(x.shape[-1]), name=parts.HIDDEN)(x))
        if self.head_dropout > 0:
            x = nn.Dropout(self.head_dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=dense_kernel_init, bias_init=dense_bias_init(x.shape[-1]),
                        name=parts.CLASSIFIER)(x)


HEADS = ("linear", "mlp")
POOLED = ("intermediates", "pooled")  # (collection, name) of the sown pooled features


def check_head(head: str, hidden: int, dropout: float) -> None:
    """UserError for a head the model cannot build."""
    if head not in HEADS:
        raise UserError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    if head == "mlp" and hidden < 1:
        raise UserError(f"head_hidden must be >= 1 for head='mlp', got {hidden}")
    if not 0 <= dropout < 1:
        raise UserError(f"head_dropout must be in [0, 1), got {dropout}")


def drop_path_rates(num_blocks: int, rate: float) -> list[float]:
    """Each block's stochastic-depth rate: timm's linear rule, rate * k / (num_blocks - 1)."""
    return [rate * k / max(num_blocks - 1, 1) for k in range(num_blocks)]


def _in_mode(norm_cls, train: bool):
    """A norm constructor whose layers remember `train`: blocks write `norm(name="bn1")(x)`."""

    def make(name):
        return functools.partial(norm_cls(name=name), train=train)

    return make
