"""ResNet model zoo in Flax Linen, numerically equal to torchvision.

Every architecture is one line in `MODELS`: a stage table and a block type. The modules follow
torchvision's structure and parameter names (`conv1`, `bn1`, `layer1_0`, `downsample`, `fc`) so
that weights map key by key (see `resnet_jax.torch_interop`). Input is NHWC.

Where a naive Flax port differs from torchvision, this file follows torchvision:
- explicit symmetric padding (k//2) on every conv and on the 3x3/2 max-pool: 'SAME' pads (0, 1)
  on even inputs when strided;
- `BatchNorm` keeps torch's running statistics (momentum 0.1 on the new batch, *unbiased* running
  variance) and computes its statistics in at least float32, two-pass (mean, then centred squares);
- Kaiming-normal (fan-out) conv init and torch's default Linear init.

No training logic lives here.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from resnet_jax import conv as conv_ops
from resnet_jax import onednn, pooling

Dtype = Any
ModuleDef = Any
KERNELS = ("auto", "xla", "patches", "onednn")

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


def _symmetric_padding(kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
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
    E[x^2] - mean^2 cancels on post-ReLU activations and costs float32 gradients up to 1e-1
    relative error (tools/grad_precision.py). `one_pass_variance=None` (auto) uses one pass only
    for 16-bit compute, where it saves a read of every activation and its error stays far below
    the data's own bfloat16 rounding.

    `group_size` ("ghost" batch norm): in training, statistics over consecutive groups of that
    many examples instead of the whole (global) batch, as PyTorch DDP's per-GPU BatchNorm and
    MLPerf's BN groups do, whatever the device count. The running statistics move towards the
    mean of the groups' statistics (mean of means, mean of unbiased variances), so a batch of G
    groups updates them as G ordinary batches averaged would.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    scale_init: Callable = nn.initializers.ones
    one_pass_variance: bool | None = None
    group_size: int | None = None
    # Training statistics and normalisation by resnet_jax.onednn's batch-norm loops (XLA:CPU,
    # float32, whole-batch statistics, two-pass variance): ~35% less time than XLA's loops.
    native: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool, relu: bool = False, residual=None):
        """Normalises `x`; then adds `residual` if given, and applies a ReLU if `relu` (what
        closes a residual block; fused into the native kernels)."""
        features = x.shape[-1]
        stat_dtype = jnp.promote_types(self.param_dtype, jnp.float32)
        scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        running_mean = self.variable(
            "batch_stats", "mean", lambda: jnp.zeros((features,), stat_dtype))
        running_var = self.variable(
            "batch_stats", "var", lambda: jnp.ones((features,), stat_dtype))

        x_stat = x.astype(stat_dtype)
        if train:
            one_pass = self.one_pass_variance
            if one_pass is None:
                one_pass = jnp.dtype(self.dtype).itemsize < 4
            group = self.group_size or x.shape[0]
            if x.shape[0] % group:
                raise ValueError(f"batch-norm group size {group} does not divide the batch of "
                                 f"{x.shape[0]}")
            if (self.native and group == x.shape[0] and not one_pass
                    and x.dtype == scale.dtype == bias.dtype == jnp.float32
                    and (residual is None or residual.dtype == jnp.float32)):
                y, mean, var = onednn.batch_norm_train(x, scale, bias, self.epsilon, relu,
                                                       residual)
                self._update_running(running_mean, running_var, mean[None], var[None],
                                     x.size // features)
                return y
            x_stat = x_stat.reshape(x.shape[0] // group, group, *x.shape[1:])  # (G, g, ..., C)
            mean, var = batch_moments(x_stat, one_pass, axes=range(1, x_stat.ndim - 1))
            self._update_running(running_mean, running_var, mean, var,
                                 x.size // features // x_stat.shape[0])
        else:
            mean, var = running_mean.value, running_var.value

        multiplier = jax.lax.rsqrt(var + self.epsilon) * scale.astype(stat_dtype)
        y = (x_stat - mean) * multiplier + bias.astype(stat_dtype)
        y = y.reshape(x.shape).astype(self.dtype)
        if residual is not None:
            y = y + residual
        return nn.relu(y) if relu else y

    def _update_running(self, running_mean, running_var, mean, var, n):
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


class Downsample(nn.Module):
    """Projection shortcut ("option B"): 1x1 strided conv + BN (torchvision's `downsample`)."""

    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x):
        x = self.conv(self.features, 1, self.strides, name="conv")(x)
        return self.norm(name="bn")(x)


def zero_pad_shortcut(x, features: int, strides: int):
    """Identity shortcut with zero padding ("option A", paper section 4.2): no parameters.

    Subsamples by `strides` and pads the new channels with zeros, half on each side, as the
    common PyTorch CIFAR ResNets do.
    """
    x = x[:, ::strides, ::strides, :]  # (B, H/s, W/s, C)
    extra = features - x.shape[-1]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


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
    last_norm: ModuleDef
    groups: int = 1
    width_per_group: int = 64
    expansion = 1

    @nn.compact
    def __call__(self, x):
        y = self.norm(name="bn1", relu=True)(self.conv(self.features, 3, self.strides,
                                                       name="conv1")(x))
        y = self.conv(self.features, 3, 1, name="conv2")(y)
        identity = (None if self.shortcut is None else
                    shortcut(x, self.features, self.strides, self.shortcut, self.conv, self.norm))
        return self.last_norm(name="bn2", relu=True)(y, residual=identity)


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
    expansion = 4

    @nn.compact
    def __call__(self, x):
        width = int(self.features * (self.width_per_group / 64.0)) * self.groups
        y = self.norm(name="bn1", relu=True)(self.conv(width, 1, 1, name="conv1")(x))
        y = self.norm(name="bn2", relu=True)(
            self.conv(width, 3, self.strides, groups=self.groups, name="conv2")(y))
        y = self.conv(self.features * 4, 1, 1, name="conv3")(y)
        identity = (None if self.shortcut is None else
                    shortcut(x, self.features * 4, self.strides, self.shortcut, self.conv,
                             self.norm))
        return self.last_norm(name="bn3", relu=True)(y, residual=identity)


class ResNet(nn.Module):
    """A ResNet: stem, stages of residual blocks, global average pool, linear classifier.

    `stem="imagenet"`: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool (torchvision).
    `stem="cifar"`: 3x3 conv, BN, ReLU (paper section 4.2).
    `shortcut`: "B" projection where shapes change, "A" zero padding, None for plain networks.
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
    # Who computes the convolutions and training-mode batch norm (see conv_general_dilated_for):
    # "xla" (XLA's own), "patches" (XLA's, but convolution weight gradients as a scan of im2col
    # blocks: 5-20x faster on XLA:CPU), "onednn" (the package's XLA:CPU extension, float32:
    # oneDNN convolutions forward and backward, and fused batch-norm loops), "auto".
    kernels: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"expected NHWC images of shape (batch, height, width, {self.in_channels}), "
                f"got shape {tuple(x.shape)}")
        if self.shortcut not in ("A", "B", None):
            raise ValueError(f"shortcut must be 'A', 'B' or None, got {self.shortcut!r}")

        conv_general_dilated = conv_general_dilated_for(self.kernels, self.dtype)

        def conv(features, kernel_size, strides, groups=1, name=None):
            return nn.Conv(features, (kernel_size, kernel_size), (strides, strides),
                           padding=_symmetric_padding(kernel_size), use_bias=False,
                           feature_group_count=groups, kernel_init=conv_kernel_init,
                           dtype=self.dtype, param_dtype=self.param_dtype, name=name,
                           conv_general_dilated=conv_general_dilated)

        native = conv_general_dilated is conv_ops.onednn_conv_general_dilated
        bn = functools.partial(BatchNorm, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                               native=native,
                               dtype=self.dtype, param_dtype=self.param_dtype,
                               one_pass_variance=self.bn_one_pass_variance,
                               group_size=self.bn_group_size)
        norm = _with_train(bn, train)
        # zero_init_residual: each residual branch starts as zero, so each block as identity.
        last_norm = _with_train(functools.partial(
            bn, scale_init=nn.initializers.zeros if self.zero_init_residual
            else nn.initializers.ones), train)

        x = x.astype(self.dtype)
        if self.stem == "imagenet":
            x = norm(name="bn1", relu=True)(conv(self.stage_widths[0], 7, 2, name="conv1")(x))
            # (B, H/2, W/2, 64); max-pool padding is -inf, as in torch.
            x = max_pool(x, (3, 3), (2, 2), _symmetric_padding(3), native=native)
        else:
            x = norm(name="bn1", relu=True)(conv(self.stage_widths[0], 3, 1, name="conv1")(x))

        for i, (num_blocks, features) in enumerate(zip(self.stage_sizes, self.stage_widths)):
            for j in range(num_blocks):
                strides = 2 if i > 0 and j == 0 else 1
                x = self.block_cls(features, strides, self.shortcut, conv, norm, last_norm,
                                   groups=self.groups, width_per_group=self.width_per_group,
                                   name=f"layer{i + 1}_{j}")(x)

        x = jnp.mean(x, axis=(1, 2))  # (B, C)
        x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=dense_kernel_init, bias_init=dense_bias_init(x.shape[-1]),
                     name="fc")(x)
        return x


def _with_train(norm_cls, train: bool):
    """A norm constructor that remembers `train`, so blocks call `norm(name=...)(x)`
    (`norm(name=..., relu=True)(x, residual=shortcut)`: then the shortcut added, and a ReLU)."""

    def make(name=None, relu=False):
        module = norm_cls(name=name)
        return lambda x, residual=None: module(x, train=train, relu=relu, residual=residual)

    return make


_imagenet = functools.partial(ResNet, stem="imagenet", stage_widths=(64, 128, 256, 512))
_cifar = functools.partial(ResNet, stem="cifar", stage_widths=(16, 32, 64), block_cls=BasicBlock,
                           shortcut="A", num_classes=10)


def _cifar_depth(depth: int) -> tuple[int, int, int]:
    n, rest = divmod(depth - 2, 6)  # 6n+2 layers
    assert rest == 0, depth
    return (n, n, n)


# Every architecture: one line. CIFAR models default to option A shortcuts; pass shortcut="B"
# for projections. `plain*` are the paper's degradation baselines (no shortcuts at all).
MODELS: dict[str, Callable[..., ResNet]] = {
    "resnet18": functools.partial(_imagenet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock),
    "resnet34": functools.partial(_imagenet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock),
    "resnet50": functools.partial(_imagenet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck),
    "resnet101": functools.partial(_imagenet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck),
    "resnet152": functools.partial(_imagenet, stage_sizes=(3, 8, 36, 3), block_cls=Bottleneck),
    "resnet200": functools.partial(_imagenet, stage_sizes=(3, 24, 36, 3), block_cls=Bottleneck),
    "wide_resnet50_2": functools.partial(_imagenet, stage_sizes=(3, 4, 6, 3),
                                         block_cls=Bottleneck, width_per_group=128),
    "wide_resnet101_2": functools.partial(_imagenet, stage_sizes=(3, 4, 23, 3),
                                          block_cls=Bottleneck, width_per_group=128),
    "resnext50_32x4d": functools.partial(_imagenet, stage_sizes=(3, 4, 6, 3),
                                         block_cls=Bottleneck, groups=32, width_per_group=4),
    "resnext101_32x8d": functools.partial(_imagenet, stage_sizes=(3, 4, 23, 3),
                                          block_cls=Bottleneck, groups=32, width_per_group=8),
    "plain18": functools.partial(_imagenet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock,
                                 shortcut=None),
    "plain34": functools.partial(_imagenet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock,
                                 shortcut=None),
    **{f"resnet{d}": functools.partial(_cifar, stage_sizes=_cifar_depth(d))
       for d in (8, 20, 32, 44, 56, 110, 1202)},  # 8: n = 1, the smallest
    **{f"plain{d}": functools.partial(_cifar, stage_sizes=_cifar_depth(d), shortcut=None)
       for d in (20, 32, 44, 56, 110)},
}

TORCHVISION_MODELS = frozenset({
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
    "wide_resnet101_2", "resnext50_32x4d", "resnext101_32x8d"})
"""The architectures torchvision builds; the others have a PyTorch twin in `torch_models`."""

MODEL_OPTIONS = ("in_channels", "shortcut", "zero_init_residual", "bn_momentum", "bn_epsilon",
                 "bn_one_pass_variance", "bn_group_size", "kernels", "dtype",
                 "param_dtype")


def check_model_name(name: str) -> None:
    """ValueError naming the valid models, for a name that is not in `MODELS`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")


def max_pool(x, window, strides, padding, native: bool = False):
    """`flax.linen.max_pool`; on the CPU, `resnet_jax.pooling.max_pool` (same values and
    gradients, forward + backward 4x faster there; with `native`, the gradient by the CPU
    extension, faster still). GPU/TPU programs keep XLA's own."""
    if jax.default_backend() == "cpu" and not isinstance(padding, str):
        return pooling.max_pool(x, window, strides, padding, native=native)
    return nn.max_pool(x, window, strides=strides, padding=padding)


def conv_general_dilated_for(implementation: str, dtype) -> Callable | None:
    """The `conv_general_dilated` that `flax.linen.Conv` should call (None: lax's own).

    "auto" picks, on the CPU backend: oneDNN (`resnet_jax.onednn`) for float32 on a single
    device, the im2col-block weight gradient (`resnet_jax.conv`) otherwise; XLA's own
    convolutions on GPUs and TPUs. oneDNN runs as an XLA custom call, which the SPMD
    partitioner can only replicate: with several CPU devices XLA would gather the batch onto
    each of them, so "auto" keeps to XLA there. Where the oneDNN extension cannot be built,
    "auto" warns once and uses the patches; an explicit "onednn" raises.
    """
    if implementation not in KERNELS:
        raise ValueError(f"kernels must be one of "
                         f"{', '.join(KERNELS)}, got {implementation!r}")
    if implementation == "auto":
        if jax.default_backend() != "cpu":
            return None
        if jnp.dtype(dtype) != jnp.float32 or jax.device_count() > 1:
            return conv_ops.conv_general_dilated
        implementation = "onednn" if _onednn_or_warn() else "patches"
    if implementation == "onednn":
        reason = onednn.unavailable_reason()
        if reason is not None:
            raise onednn.OnednnUnavailable(f"kernels='onednn': {reason}")
        return conv_ops.onednn_conv_general_dilated
    return conv_ops.conv_general_dilated if implementation == "patches" else None


@functools.cache
def _onednn_or_warn() -> bool:
    reason = onednn.unavailable_reason()
    if reason is not None:
        warnings.warn(f"oneDNN convolutions unavailable ({reason}); using XLA's convolutions "
                      "with the im2col-block weight gradient, about 2x slower on the CPU",
                      stacklevel=2)
    return reason is None


def is_cifar(name: str) -> bool:
    """CIFAR-family models (3x3 stem, 16/32/64 filters) are meant for small images."""
    return MODELS[name].keywords["stem"] == "cifar"


def create_model(name: str, *, num_classes: int, **options) -> ResNet:
    """Builds the Flax module `name` (a key of `MODELS`).

    Options: in_channels (3), shortcut ("A"/"B" for CIFAR models), zero_init_residual (False),
    bn_momentum (0.1, torch's convention), bn_epsilon (1e-5), bn_one_pass_variance (None: only
    for 16-bit compute), bn_group_size (None: statistics over the whole batch; N: over groups
    of N examples, "ghost" batch norm), kernels ("auto", "xla",
    "patches", "onednn"; see `conv_general_dilated_for`),
    dtype (computation, float32), param_dtype (float32).
    Batch-norm statistics are kept in at least float32.
    """
    check_model_name(name)
    unknown = sorted(set(options) - set(MODEL_OPTIONS))
    if unknown:
        raise ValueError(f"unknown model option(s) {', '.join(unknown)}; valid options: "
                         f"num_classes, {', '.join(MODEL_OPTIONS)}")
    if options.get("shortcut", "A") not in ("A", "B", None):
        raise ValueError(f"shortcut must be 'A', 'B' or None, got {options['shortcut']!r}")
    return MODELS[name](num_classes=num_classes, **options)


def default_image_size(name: str) -> int:
    return 32 if is_cifar(name) else 224


def init_shapes(model: ResNet, image_size: int, batch_size: int = 1):
    """The variables' shapes and dtypes, by abstract evaluation (no compile, no memory)."""
    x = jax.ShapeDtypeStruct((batch_size, image_size, image_size, model.in_channels), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)


def count_params(model: ResNet, image_size: int | None = None) -> int:
    shapes = init_shapes(model, image_size or 32)
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes["params"]))


def forward_macs(model: ResNet, image_size: int) -> int:
    """Multiply-accumulates of one image's forward pass, counted over convs and the classifier.

    This is the figure torchvision documents as "GFLOPS" (e.g. 4.089 for resnet50 at 224x224);
    a training step costs about 3x the forward, and one MAC is 2 FLOPs.
    """
    macs = []

    def count(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and isinstance(module, nn.Conv):
            kernel = math.prod(module.kernel_size) * args[0].shape[-1] // module.feature_group_count
            macs.append(math.prod(out.shape[1:]) * kernel)
        elif context.method_name == "__call__" and isinstance(module, nn.Dense):
            macs.append(args[0].shape[-1] * out.shape[-1])
        return out

    x = jax.ShapeDtypeStruct((1, image_size, image_size, model.in_channels), jnp.float32)
    with nn.intercept_methods(count):
        jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    return sum(macs)
