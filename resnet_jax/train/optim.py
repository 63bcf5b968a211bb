"""Optax optimizers and learning-rate schedules built from the config.

`sgd` is the exact twin of `torch.optim.SGD` with coupled weight decay:
    g += wd * p;  buf = m * buf + g;  p -= lr * buf      (Nesterov: p -= lr * (g + m * buf))
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax

from resnet_jax.errors import UserError


def sgd(learning_rate: float | optax.Schedule, *, momentum: float = 0.9, nesterov: bool = False,
        weight_decay: float = 0.0, decay_mask: Any | Callable | None = None
        ) -> optax.GradientTransformation:
    """SGD with momentum and torch-style (coupled, L2) weight decay.

    The decay is added to the gradient *before* momentum, as torch does; `decay_mask` (a pytree
    of bools or a function of the params) limits it, e.g. to exclude batch-norm parameters.
    """
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask=decay_mask),
        optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov),
    )


SCHEDULES = ("constant", "cosine", "piecewise")


def check_schedule(name: str) -> None:
    if name not in SCHEDULES:
        raise UserError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}")


def base_learning_rate(config) -> float:
    """The peak learning rate: `learning_rate`, linearly scaled with the batch size if asked."""
    if config.lr_scaling_batch_size:
        return config.learning_rate * config.batch_size / config.lr_scaling_batch_size
    return config.learning_rate


def create_schedule(config, steps_per_epoch: float, total_steps: int) -> optax.Schedule:
    """Linear warm-up (from 0) then constant, piecewise-constant (the paper's) or cosine decay.

    Every schedule counts optimizer steps.
    """
    check_schedule(config.schedule)
    peak = base_learning_rate(config)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if config.schedule == "constant":
        decay = optax.constant_schedule(peak)
    elif config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1))
    else:  # "piecewise"
        boundaries = list(config.lr_boundaries_steps) + [
            int(round(e * steps_per_epoch)) for e in config.lr_boundaries_epochs]
        decay = optax.piecewise_constant_schedule(
            peak, {b - warmup: config.lr_decay_factor for b in sorted(boundaries)})
    if warmup == 0:
        return decay
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup), decay], boundaries=[warmup])


def decay_mask(params):
    """True for conv and dense kernels; False for batch-norm scales/biases and Dense biases."""
    import jax
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def create_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
    """SGD as torch's; with `freeze_backbone`, for the classifier head only (the rest is left
    exactly as it is: no update, no weight decay)."""
    tx = sgd(schedule, momentum=config.momentum, nesterov=config.nesterov,
             weight_decay=config.weight_decay,
             decay_mask=None if config.decay_bn_and_bias else decay_mask)
    if not config.freeze_backbone:
        return tx
    from resnet_jax.train.steps import HEAD

    def labels(params):
        return {name: jax.tree_util.tree_map(lambda _: "train" if name == HEAD else "frozen",
                                             value) for name, value in params.items()}

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
