"""torchvision state dicts <-> Flax variables, for every model in `resnet_jax.models.MODELS`.

Keys map one to one: the Flax path `layer1_0/downsample/conv/kernel` is torchvision's
`layer1.0.downsample.0.weight`. Conv kernels go OIHW <-> HWIO, Linear weights (out, in) <->
Dense kernels (in, out). torch's `num_batches_tracked` counters have no Flax twin: they are
ignored on the way in and written as zero on the way out.

torch is imported only by `to_torchvision`; `from_torchvision` also takes numpy arrays.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from resnet_jax import models
from resnet_jax.errors import UserError

_LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_DOWNSAMPLE_TO_TORCH = {"conv": "0", "bn": "1"}


def torch_key(collection: str, path: tuple[str, ...]) -> str:
    """The torchvision key of a Flax variable, e.g. ('layer1_0', 'conv1', 'kernel')."""
    parts = []
    for i, name in enumerate(path[:-1]):
        if i > 0 and path[i - 1] == "downsample":
            name = _DOWNSAMPLE_TO_TORCH[name]
        parts.append(re.sub(r"^layer(\d+)_(\d+)$", r"layer\1.\2", name))
    return ".".join(parts + [_LEAF_TO_TORCH[(collection, path[-1])]])


def _to_torch_layout(value: np.ndarray) -> np.ndarray:
    if value.ndim == 4:  # HWIO -> OIHW
        return np.transpose(value, (3, 2, 0, 1))
    if value.ndim == 2:  # (in, out) -> (out, in)
        return value.T
    return value


def from_torch_layout(value: np.ndarray) -> np.ndarray:
    if value.ndim == 4:  # OIHW -> HWIO
        return np.transpose(value, (2, 3, 1, 0))
    if value.ndim == 2:
        return value.T
    return value


def _expected_torch_shapes(name: str, num_classes: int, in_channels: int,
                           **options) -> dict[str, tuple[tuple[str, tuple[str, ...]], tuple]]:
    """torch key -> ((collection, flax path), torch-layout shape) for the model `name`."""
    model = models.create_model(name, num_classes=num_classes, in_channels=in_channels, **options)
    shapes = models.init_shapes(model, 32)
    expected = {}
    for collection in ("params", "batch_stats"):
        for path, leaf in traverse_util.flatten_dict(shapes[collection]).items():
            shape = leaf.shape
            if len(shape) == 4:
                shape = (shape[3], shape[2], shape[0], shape[1])
            elif len(shape) == 2:
                shape = shape[::-1]
            expected[torch_key(collection, path)] = ((collection, path), tuple(shape))
    return expected


def as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


def from_torchvision(name: str, state_dict: Mapping[str, Any], **options) -> dict:
    """Flax variables `{'params': ..., 'batch_stats': ...}` from a torchvision state dict.

    `num_classes` and `in_channels` are read from the state dict; other model options (e.g.
    `shortcut="B"` for a CIFAR model with projections) are passed as keywords. Raises UserError
    naming every missing, unexpected or misshapen key: never a partial load.
    """
    not_arrays = [f"{k} ({type(v).__name__})" for k, v in state_dict.items()
                  if not hasattr(v, "shape")]
    if not_arrays:
        raise UserError(f"not a state dict of tensors: {_abbreviate(not_arrays)} are not "
                        f"tensors or arrays")
    if "fc.weight" not in state_dict or "conv1.weight" not in state_dict:
        raise UserError(f"not a ResNet state dict for {name!r}: it lacks 'fc.weight' or "
                         f"'conv1.weight' (keys start with {list(state_dict)[:3]})")
    num_classes = tuple(state_dict["fc.weight"].shape)[0]
    if num_classes < 1:  # a classifier's state dict: num_classes=0 (no head) has no fc
        raise UserError(f"fc.weight has no outputs: num_classes must be >= 1, got {num_classes}")
    in_channels = tuple(state_dict["conv1.weight"].shape)[1]
    expected = _expected_torch_shapes(name, num_classes, in_channels, **options)

    given = {k for k in state_dict if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - given)
    unexpected = sorted(given - set(expected))
    misshapen = [f"{k}: expected {expected[k][1]}, got {tuple(state_dict[k].shape)}"
                 for k in sorted(given & set(expected))
                 if tuple(state_dict[k].shape) != expected[k][1]]
    if missing or unexpected or misshapen:
        problems = []
        if missing:
            problems.append(f"missing keys {_abbreviate(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_abbreviate(unexpected)}")
        if misshapen:
            problems.append(f"wrong shapes {_abbreviate(misshapen)}")
        raise UserError(f"state dict does not match {name} (num_classes={num_classes}, "
                         f"{options or 'default options'}): " + "; ".join(problems))

    flat = {}
    for key, ((collection, path), _) in expected.items():
        flat[(collection,) + path] = jax.numpy.asarray(from_torch_layout(as_numpy(state_dict[key])))
    return traverse_util.unflatten_dict(flat)


def torch_arrays(tree: Mapping[str, Any], collection: str) -> dict[str, np.ndarray]:
    """One Flax collection (`params` or `batch_stats`, or gradients shaped like `params`) as
    numpy arrays under torchvision's keys and in its layouts."""
    return {torch_key(collection, path): _to_torch_layout(np.asarray(value))
            for path, value in traverse_util.flatten_dict(dict(tree)).items()}


def to_torchvision(name: str, variables: Mapping[str, Any]) -> dict:
    """A torchvision state dict (torch tensors, `strict=True`-loadable) from Flax variables."""
    import torch  # optional dependency: only this direction needs it

    models.check_model_name(name)
    missing = [c for c in ("params", "batch_stats") if c not in variables]
    if missing:
        raise UserError(f"variables for {name} lack {' and '.join(map(repr, missing))}: pass "
                        f"the model's {{'params': ..., 'batch_stats': ...}}")
    state_dict = {}
    for collection in ("params", "batch_stats"):
        for key, array in torch_arrays(variables[collection], collection).items():
            state_dict[key] = torch.from_numpy(np.array(array, order="C"))  # an owned copy
            if key.endswith("running_var"):
                state_dict[key.replace("running_var", "num_batches_tracked")] = torch.tensor(
                    0, dtype=torch.long)
    return state_dict


def _abbreviate(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', ... ({len(items)} in all)' if len(items) > limit else ''}]"
