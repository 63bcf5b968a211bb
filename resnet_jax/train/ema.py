"""An exponential moving average of the weights and batch-norm statistics, as torchvision's
classification reference keeps it (`--model-ema --model-ema-steps N --model-ema-decay D`):

- the decay is adjusted to the batch, the update interval and the schedule length
  (train.py): alpha = min(1, (1 - D) * global_batch * N / epochs), decay = 1 - alpha;
- after the optimizer step of iteration i of an epoch, if i % N == 0, AveragedModel's
  `update_parameters` with the reference's `ema_avg` over parameters and buffers
  (`use_buffers=True`): the first update copies, later ones average
  avg = decay * avg + (1 - decay) * new; then, during the warm-up epochs, `n_averaged` is
  reset to 0, so the average keeps copying the weights until the warm-up ends.

Iterations and epochs are counted as torchvision's DataLoader counts them, ceil(N_train / B)
iterations an epoch (its training loader keeps the last, partial batch).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from resnet_jax.plan import EmaSpec


@dataclasses.dataclass(frozen=True)
class EmaConfig:
    decay: float            # the adjusted decay
    every_steps: int        # N
    steps_per_epoch: int    # iterations of an epoch
    warmup_epochs: int      # epochs during which the average only copies

    @classmethod
    def adjusted(cls, spec: EmaSpec | None, batch_size: int, num_train: int,
                 num_epochs: float) -> EmaConfig | None:
        """The plan's EMA (None: off) adjusted to the batch and the run's length."""
        if spec is None:
            return None
        adjust = batch_size * spec.every_steps / num_epochs
        alpha = min(1.0, (1.0 - spec.decay) * adjust)
        return cls(1.0 - alpha, spec.every_steps, math.ceil(num_train / batch_size),
                   spec.warmup_epochs)


def initial(params, batch_stats) -> dict:
    return {"params": params, "batch_stats": batch_stats, "count": jnp.zeros([], jnp.int32)}


def update(averaged: dict, params, batch_stats, step, config: EmaConfig) -> dict:
    """The average after optimizer step `step` (0-based, the step just taken) produced
    (params, batch_stats)."""
    iteration, epoch = step % config.steps_per_epoch, step // config.steps_per_epoch
    due = iteration % config.every_steps == 0
    first = averaged["count"] == 0

    def average(old, new):
        mixed = config.decay * old + (1.0 - config.decay) * new
        return jnp.where(due, jnp.where(first, new, mixed), old).astype(old.dtype)

    count = jnp.where(due, jnp.where(epoch < config.warmup_epochs, 0, averaged["count"] + 1),
                      averaged["count"])
    return {"params": jax.tree_util.tree_map(average, averaged["params"], params),
            "batch_stats": jax.tree_util.tree_map(average, averaged["batch_stats"],
                                                  batch_stats),
            "count": count.astype(jnp.int32)}


def averaged_variables(state) -> dict:
    """The averaged weights and statistics, as a model in eval mode takes them."""
    return {"params": state.ema["params"], "batch_stats": state.ema["batch_stats"]}
