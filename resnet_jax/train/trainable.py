"""Which parameters a run may change: the `trainable` config key (parsed by the plan,
`resnet_jax.plan.parse_trainable`), applied to the parameters here.

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

from resnet_jax.models import parts


def part_of(path) -> str:
    """"stem", "layerK", "head" (or "" for anything else) of a parameter's path."""
    return parts.part_of(getattr(path[0], "key", str(path[0])))


def is_norm(path) -> bool:
    """A batch-norm scale or bias (modules bn1.., the projection's bn)."""
    return len(path) >= 2 and parts.is_norm(getattr(path[-2], "key", ""))


def mask(params, parts: frozenset[str] | None):
    """A pytree like `params`: True where the parameter trains."""
    def trains(path, _):
        return parts is None or part_of(path) in parts or ("norm" in parts and is_norm(path))
    return jax.tree_util.tree_map_with_path(trains, params)


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
