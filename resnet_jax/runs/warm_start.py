"""`init_from`: a run's starting weights from a torchvision state dict (.pth/.pt, .safetensors),
from another workdir of this project, or by name from the Hugging Face Hub
(`torchvision:resnet50`, `hf-hub:OWNER/REPO`: `resnet_jax.interop.pretrained`).

Every tensor whose name and shape fit the model is loaded, bit for bit; the others keep their
fresh initialisation. That is how a classifier head of another class count (ImageNet's 1000
classes, a new task's 9) is re-initialised. What was loaded and what was not is reported. Weights
that fit less than half of the model are refused: they are another architecture's.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from resnet_jax import extras
from resnet_jax.errors import UserError
from resnet_jax.interop import pretrained, torchvision_weights
from resnet_jax.models import parts

TORCH_SUFFIXES = (".pth", ".pt")
SAFETENSORS_SUFFIX = ".safetensors"


class InitError(UserError):
    """init_from names weights that cannot be read or do not fit the model."""


def _read_torch(path: str) -> Mapping[str, Any]:
    try:
        import torch
    except ImportError:
        raise InitError(f"reading {path} needs PyTorch: "
                        f"{extras.install_command('torch')}") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (pickle, zip and torch errors alike)
        if "Weights only load failed" in str(error):  # torch's answer to a pickled object
            raise InitError(
                f"cannot read {path} as a PyTorch state dict: it holds Python objects besides "
                f"tensors, and unpickling them would run their code, so they are not loaded; "
                f"save the state dict alone (torch.save(model.state_dict(), PATH)) or as "
                f".safetensors") from None
        raise InitError(f"cannot read {path} as a PyTorch state dict "
                        f"({_first_sentence(error)})") from None
    # Training scripts often wrap the weights: {"model": ...} or {"state_dict": ...}.
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise InitError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    # torch.nn.DataParallel / DistributedDataParallel save their keys under "module.".
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def _first_sentence(error: Exception, limit: int = 200) -> str:
    """The error's first line, cut at a sentence's end if it is long."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if len(line) <= limit:
        return line
    end = line.rfind(". ", 0, limit)
    return line[:end + 1] if end > 0 else line[:limit - 3] + "..."


def _read_safetensors(path: str) -> Mapping[str, Any]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise InitError(f"reading {path} needs safetensors: pip install safetensors") from None
    try:
        return load_file(path)
    except Exception as error:  # noqa: BLE001
        raise InitError(f"cannot read {path} as safetensors ({_first_sentence(error)})") \
            from None


def _flax_arrays_from_torch(state_dict: Mapping[str, Any], expected_keys) -> dict:
    """{(collection, *flax path): array in Flax layout} for the torch keys we know."""
    flat = {}
    for key, value in state_dict.items():
        if key in expected_keys:
            flat[expected_keys[key]] = torchvision_weights.from_torch_layout(
                torchvision_weights.as_numpy(value))
        elif not key.endswith("num_batches_tracked"):  # torch's counter has no twin here
            flat[(_UNKNOWN, key)] = np.asarray(())
    return flat


_UNKNOWN = "not a variable of this model"


def _flax_arrays_from_workdir(path: str) -> dict:
    from resnet_jax.runs import checkpoint

    try:
        state = checkpoint.load_state(path)
    except FileNotFoundError:
        raise InitError(f"init_from={path} is a directory without checkpoints: give a "
                        f"workdir of this project or a .pth/.pt/.safetensors file") from None
    return {(collection,) + p: np.asarray(v)
            for collection in ("params", "batch_stats")
            for p, v in traverse_util.flatten_dict(dict(state[collection])).items()}


@dataclasses.dataclass(frozen=True)
class Located:
    """Where `init_from`'s weights are on this machine, and what they are."""

    path: str  # a local file or workdir
    description: str  # as the summary names them
    record: dict | None = None  # weights by name: {"init_from", "repo", "revision", "file"}


def locate(init_from: str) -> Located:
    """`init_from` as a local path: a name's weights fetched (or found in the Hub's cache)."""
    if pretrained.is_name(init_from):
        path, record = pretrained.fetch(init_from)
        return Located(path, f"{init_from} ({record['repo']}, revision "
                             f"{record['revision'][:12]})", record)
    return Located(os.path.expanduser(init_from), init_from)


def read(path: str, variables) -> dict:
    """The weights at `path` as {(collection, *flax path): numpy array}, named as `variables`
    are (their shapes are matched by `merge`)."""
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        return _flax_arrays_from_workdir(path)
    state_dict = _state_dict(path)
    expected = {}
    for collection in ("params", "batch_stats"):
        for p in traverse_util.flatten_dict(dict(variables[collection])):
            expected[torchvision_weights.torch_key(collection, p)] = (collection,) + p
    return _flax_arrays_from_torch(state_dict, expected)


def _state_dict(path: str) -> Mapping[str, Any]:
    """The torchvision state dict in the file at `path` (.pth/.pt, .safetensors)."""
    if not os.path.exists(path):
        raise InitError(f"init_from={path} does not exist")
    if path.endswith(SAFETENSORS_SUFFIX):
        return _read_safetensors(path)
    if path.endswith(TORCH_SUFFIXES):
        return _read_torch(path)
    raise InitError(f"init_from={path}: expected a workdir, or a {', '.join(TORCH_SUFFIXES)} "
                    f"or {SAFETENSORS_SUFFIX} file")


def classifier_width(path: str) -> int:
    """The classes the weights at `path` (a file or a workdir) predict: their classifier's
    output width."""
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        from resnet_jax.runs import checkpoint

        return parts.num_classes(checkpoint.load_state(path, only=("params",))["params"])
    key = f"{parts.CLASSIFIER}.weight"  # torchvision's name of the classifier's kernel
    state_dict = _state_dict(path)
    if key not in state_dict:
        raise InitError(f"{path} has no classifier ({key}): not a ResNet's state dict?")
    return int(state_dict[key].shape[0])


def merge(variables, loaded: dict, source: str, model_name: str = "the model",
          complete: bool = False) -> tuple[dict, str]:
    """`variables` with every loaded array of the same path and shape put in (cast to the
    variable's dtype); returns the new variables and a summary of what was and was not loaded.
    `complete`: every variable must be loaded (to evaluate weights as they are)."""
    flat = {}
    for collection in ("params", "batch_stats"):
        for p, v in traverse_util.flatten_dict(dict(variables[collection])).items():
            flat[(collection,) + p] = v
    taken, misshapen = [], []
    merged = dict(flat)
    for key, target in flat.items():
        if key not in loaded:
            continue
        value = loaded[key]
        if tuple(value.shape) != tuple(target.shape):
            misshapen.append((key, value.shape, target.shape))
            continue
        merged[key] = np.asarray(value).astype(target.dtype, copy=False)
        taken.append(key)
    absent = [k for k in flat if k not in loaded]
    unused = [k for k in loaded if k not in flat]
    backbone_misshapen = [m for m in misshapen if not _is_head(m[0])]
    # torch's strict loading, the head aside: a backbone tensor too many (a deeper network's
    # weights) or too few (a shallower one's) is another architecture, whatever the overlap.
    unexpected = [k for k in unused if not _is_head(k)]
    missing = [k for k in absent if not _is_head(k)]
    if backbone_misshapen or unexpected or missing:
        details = []
        if backbone_misshapen:
            details.append(", ".join(f"{_name(k)} {_torch_shape(a)} there, "
                                     f"{_torch_shape(b)} here"
                                     for k, a, b in backbone_misshapen[:3]))
        if unexpected:
            details.append(f"{len(unexpected)} tensors there that {model_name} does not have "
                           f"({_names(unexpected, 3)})")
        if missing:
            details.append(f"{len(missing)} tensors of {model_name} not there "
                           f"({_names(missing, 3)})")
        raise InitError(f"init_from={source} does not fit {model_name}: {'; '.join(details)}; "
                        f"weights of another architecture? (only the classifier head, "
                        f"{parts.CLASSIFIER}.*, may differ)")
    if complete and len(taken) < len(flat):
        raise InitError(
            f"{source} does not fit the model completely ({len(flat) - len(taken)} of "
            f"{len(flat)} tensors do not: "
            f"{_names(misshapen and [k for k, *_ in misshapen] or absent)}); "
            f"evaluating needs weights for every layer, the classifier head included (the "
            f"same num_classes)")
    lines = [f"init_from {source}: loaded {len(taken)} of {len(flat)} tensors"]
    if misshapen:
        lines.append("re-initialised (another shape there): " + ", ".join(
            f"{_name(k)} {_torch_shape(a)} there, {_torch_shape(b)} here"
            for k, a, b in misshapen[:6]))
    if absent:
        lines.append(f"initialised fresh (not there): {_names(absent)}")
    if unused:
        lines.append(f"not used (not in this model): {_names(unused)}")
    result = {collection: {} for collection in ("params", "batch_stats")}
    for (collection, *p), value in merged.items():
        result[collection][tuple(p)] = value
    return ({c: traverse_util.unflatten_dict(v) for c, v in result.items()},
            "\n  ".join(lines))


def initialised_from(model, image_shape, init_from: str | Located, model_name: str,
                     complete: bool = False) -> tuple[dict, str]:
    """`model`'s variables (host arrays) with the weights `init_from` names (or, already
    `locate`d, holds) merged into a fresh initialisation, for images of `image_shape`
    (H, W, C); returns them and the summary. With `complete`, every tensor must be loaded
    (see `merge`)."""
    located = init_from if isinstance(init_from, Located) else locate(init_from)
    fresh = jax.device_get(jax.jit(model.init, static_argnames="train")(
        jax.random.PRNGKey(0), np.zeros((1, *image_shape), np.float32), train=False))
    return merge(fresh, read(located.path, fresh), located.description, model_name,
                 complete=complete)


def _torch_shape(shape) -> tuple:
    """A Flax shape in torch's layout, as the names in the summary are torch's."""
    shape = tuple(shape)
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return shape[::-1] if len(shape) == 2 else shape


def _is_head(key) -> bool:
    return parts.is_head(_name(key).split(".")[0])


def _name(key) -> str:
    collection, *p = key
    if collection not in ("params", "batch_stats"):
        return p[0]
    return torchvision_weights.torch_key(collection, tuple(p))


def _names(keys, limit: int = 6) -> str:
    names = [_name(k) for k in keys]
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def apply(state, init_from: str, model_name: str, replicated) -> tuple[Any, str, dict | None]:
    """`state` (freshly initialised) with the weights `init_from` names; returns it, the
    summary and, for weights by name, their record (`Located.record`)."""
    located = locate(init_from)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    host = jax.device_get(variables)
    merged, summary = merge(host, read(located.path, host), located.description, model_name)
    merged = jax.device_put(merged, replicated)
    return (state.replace(params=merged["params"], batch_stats=merged["batch_stats"]), summary,
            located.record)
