"""The model zoo: every architecture is one line in `MODELS` (a stage table and a block type),
and `create_model` builds one by name with checked options."""

from __future__ import annotations

import functools
from collections.abc import Callable

from resnet_jax.errors import UserError
from resnet_jax.models import kernels
from resnet_jax.models.blocks import BasicBlock, Bottleneck
from resnet_jax.models.resnet import ResNet

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
                 "bn_one_pass_variance", "bn_group_size", "kernels", "drop_path_rate",
                 "eval_mode_norms", "head", "head_hidden", "head_dropout", "dtype",
                 "param_dtype", "features_only", "out_indices")


def check_model_name(name: str) -> None:
    """UserError naming the valid models, for a name that is not in `MODELS`."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")


def is_cifar(name: str) -> bool:
    """CIFAR-family models (3x3 stem, 16/32/64 filters) are meant for small images."""
    return MODELS[name].keywords["stem"] == "cifar"


def default_image_size(name: str) -> int:
    return 32 if is_cifar(name) else 224


def create_model(name: str, /, *, num_classes: int, **options) -> ResNet:
    """Builds the Flax module `name` (a key of `MODELS`).

    Options: in_channels (3), shortcut ("A"/"B" for CIFAR models), zero_init_residual (False),
    bn_momentum (0.1, torch's convention), bn_epsilon (1e-5), bn_one_pass_variance (None: only
    for 16-bit compute), bn_group_size (None: statistics over the whole batch; N: over groups
    of N examples, "ghost" batch norm), kernels ("xla": portable and exportable; "auto": the
    fastest this machine has; see `resnet_jax.models.kernels`), dtype (computation, float32),
    param_dtype (float32). Batch-norm statistics are kept in at least float32.

    As a backbone (timm's conventions): `num_classes=0` returns the globally pooled features
    (B, C); `features_only=True` returns a tuple of NHWC feature maps, `out_indices` (default:
    all) numbering them 0 = the stem's activation, 1.. = the stages; the module's
    `feature_info` gives their channels, reductions and torchvision names. Inside another
    Flax module, `name=` names the submodule (its parameters' scope), as for any Flax module.
    """
    check_model_name(name)
    module_name = options.pop("name", None)
    if num_classes < 0:
        raise UserError(f"num_classes must be >= 1 (logits) or 0 (pooled features), got "
                        f"{num_classes}")
    if options.get("out_indices") is not None and not options.get("features_only"):
        raise UserError("out_indices chooses feature maps: it needs features_only=True")
    unknown = sorted(set(options) - set(MODEL_OPTIONS))
    if unknown:
        raise UserError(f"unknown model option(s) {', '.join(unknown)}; valid options: "
                        f"num_classes, {', '.join(MODEL_OPTIONS)}")
    if options.get("shortcut", "A") not in ("A", "B", None):
        raise UserError(f"shortcut must be 'A', 'B' or None, got {options['shortcut']!r}")
    if name.startswith("plain") and options.get("shortcut") is not None:
        # A shortcut would silently make the plain baseline a residual net.
        raise UserError(f"{name} is a plain net: it has no shortcuts (shortcut="
                        f"{options['shortcut']!r} given)")
    kernels.check_name(options.get("kernels", "xla"))
    if options.get("out_indices") is not None:
        options["out_indices"] = _out_indices(options["out_indices"])
    model = MODELS[name](num_classes=num_classes, name=module_name, **options)
    _ = model.feature_info  # a UserError for out_indices outside the model's feature maps
    return model


def stage_names(name: str) -> tuple[str, ...]:
    """The stages of the model `name`, as its parameters name them: layer1..layer4 (CIFAR
    nets: layer1..layer3)."""
    from resnet_jax.models import parts

    check_model_name(name)
    return tuple(parts.stage_name(i) for i in range(len(MODELS[name].keywords["stage_sizes"])))


def _out_indices(value) -> int | tuple[int, ...]:
    """An int (the last N feature maps, as timm reads it) or a tuple of ints; UserError for
    anything else (a float, a string, a nested list)."""
    import numbers

    def whole(x) -> bool:
        return isinstance(x, numbers.Integral) and not isinstance(x, bool)

    if whole(value):
        return int(value)
    if isinstance(value, (list, tuple)) and all(whole(i) for i in value):
        return tuple(int(i) for i in value)
    raise UserError(f"out_indices must be an int (the last N feature maps) or a sequence of "
                    f"ints, got {value!r}")
