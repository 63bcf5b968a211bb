"""Which parts of the network a run may change: the `trainable` config key.

    trainable = "all"            every parameter (the default)
    trainable = "head"           a linear probe (what freeze_backbone=True means)
    trainable = "norm+head"      every batch-norm scale and bias, and the head
    trainable = "layer4+head"    the last stage and the head

Parts, joined with `+`: `stem` (conv1, bn1), `layer1`.. the stages (`layer1`..`layer4` for
the ImageNet nets, `layer1`..`layer3` for the CIFAR ones), `norm` (every batch-norm scale and
bias), `head` (the classifier and any hidden layer before it). A frozen parameter gets no
gradient (it is cut with `stop_gradient`, so XLA drops its backward pass where nothing else
needs it), no optimiser state, no weight decay, and stays bitwise as loaded. The batch norms of
a frozen stage (and of the stem) run in eval mode, on their running statistics, which stay as
they are; with `norm` trainable every batch norm trains and its statistics update.
"""

from __future__ import annotations

import jax
import numpy as np

from resnet_jax.errors import UserError

HEAD_MODULES = ("fc", "head_hidden")
STEM_MODULES = ("conv1", "bn1")


def stage_names(model_name: str) -> tuple[str, ...]:
    from resnet_jax import models

    return tuple(f"layer{i}" for i in range(1, (4 if models.is_cifar(model_name) else 5)))


def parse(text: str, model_name: str, freeze_backbone: bool = False) -> frozenset[str] | None:
    """The trainable parts, or None for everything; UserError for a part the model lacks."""
    if freeze_backbone:
        if text not in ("all", "head"):
            raise UserError(f"freeze_backbone=True means trainable='head'; it cannot be "
                            f"combined with trainable={text!r} (drop one of them)")
        return frozenset({"head"})
    valid = ("stem", *stage_names(model_name), "norm", "head")
    parts = [part.strip() for part in text.split("+")]
    if parts == ["all"]:
        return None
    unknown = [part for part in parts if part not in valid]
    if unknown or not parts:
        raise UserError(f"trainable={text!r}: {', '.join(unknown) or 'nothing'} is not a part "
                        f"of {model_name}; join parts with '+' from {', '.join(valid)}, or "
                        f"'all'")
    if set(valid) <= set(parts):
        return None
    return frozenset(parts)


def from_config(config) -> frozenset[str] | None:
    """The parts of the network a run may change (None: all of it)."""
    return parse(config.trainable, config.model, config.freeze_backbone)


def part_of(path) -> str:
    """"stem", "layerK", "head" (or "" for anything else) of a parameter's path."""
    top = getattr(path[0], "key", str(path[0]))
    if top in STEM_MODULES:
        return "stem"
    if top in HEAD_MODULES:
        return "head"
    return top.split("_")[0] if top.startswith("layer") else ""


def is_norm(path) -> bool:
    """A batch-norm scale or bias (modules bn1.., the projection's bn)."""
    return len(path) >= 2 and getattr(path[-2], "key", "").startswith("bn")


def mask(params, parts: frozenset[str] | None):
    """A pytree like `params`: True where the parameter trains."""
    def trains(path, _):
        return parts is None or part_of(path) in parts or ("norm" in parts and is_norm(path))
    return jax.tree_util.tree_map_with_path(trains, params)


def eval_mode_norms(parts: frozenset[str] | None, model_name: str) -> tuple[str, ...]:
    """The stem and stages whose batch norms run in eval mode in training."""
    if parts is None or "norm" in parts:
        return ()
    return tuple(name for name in ("stem", *stage_names(model_name)) if name not in parts)


def stop_frozen_gradients(params, trains):
    """`params` with `stop_gradient` on each frozen one."""
    return jax.tree_util.tree_map(lambda p, t: p if t else jax.lax.stop_gradient(p), params,
                                  trains)


def describe(params, trains, text: str) -> str:
    """"trainable: layer4+head, 8,394,752 of 11,181,642 parameters (75.1%)"; `trains` None:
    every parameter."""
    sizes = [int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params)]
    flags = [True] * len(sizes) if trains is None else jax.tree_util.tree_leaves(trains)
    trained, total = sum(s for s, t in zip(sizes, flags) if t), sum(sizes)
    return (f"trainable: {text}, {trained:,} of {total:,} parameters "
            f"({100 * trained / max(total, 1):.1f}%)")
