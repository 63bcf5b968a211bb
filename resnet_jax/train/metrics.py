"""A training step's metrics on the device: its sums, whether it stayed finite, their
accumulation over a logging interval, and their means on the host. (The task computes the sums
of one batch, `resnet_jax.tasks`; the run's record of them is `resnet_jax.runs.history`.)"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from resnet_jax import errors

# Keys of a training step's sums that are not per-example sums: how many steps had a loss or
# gradients that were not finite, and the first of them (NO_STEP if none).
NONFINITE_STEPS, FIRST_NONFINITE_STEP = "nonfinite_steps", "first_nonfinite_step"
NO_STEP = np.iinfo(np.int32).max


def nonfinite_sums(finite, step) -> dict:
    """A training step's record of whether its loss and gradients were `finite`."""
    return {NONFINITE_STEPS: jnp.where(finite, 0, 1).astype(jnp.int32),
            FIRST_NONFINITE_STEP: jnp.where(finite, NO_STEP, step).astype(jnp.int32)}


def accumulate(total: dict | None, sums: dict) -> dict:
    """Adds one step's sums to the interval's (on the device): sums add, the first non-finite
    step is the minimum."""
    if total is None:
        return sums
    return {key: (jnp.minimum if key == FIRST_NONFINITE_STEP else jnp.add)(total[key], value)
            for key, value in sums.items()}


def means(sums: dict) -> dict:
    """Host floats: loss, top1 (and top5 where there are more than 5 classes) averaged over the
    examples counted."""
    count = float(sums["count"])
    return {k: float(sums[k]) / count for k in ("loss", "top1", "top5") if k in sums}


def raise_if_diverged(interval: dict | None, step: int, manager,
                      state_finite: bool = True) -> None:
    """Diverged, once the pending checkpoint is written, if a step up to `step` had a loss or
    gradients that were not finite, or if the state is not (`state_finite`)."""
    nonfinite_steps = 0 if interval is None else int(interval[NONFINITE_STEPS])
    if state_finite and not nonfinite_steps:
        return
    manager.wait_until_finished()
    last_good = manager.latest_step()
    kept = (f"the last checkpoint, step {last_good}, is finite and kept" if last_good is not None
            else "no checkpoint was saved")
    loss = ("" if interval is None else
            f"; mean loss {float(interval['loss']) / float(interval['count']):.4g} since the "
            f"last log")
    if nonfinite_steps:
        first = int(interval[FIRST_NONFINITE_STEP]) + 1
        what = (f"at step {first}: the loss or gradients are not finite ({nonfinite_steps} "
                f"such step(s) up to step {step}{loss})")
    else:  # a finite update that overflowed
        what = (f"at step {step}: the parameters or statistics are not finite"
                + (f" ({loss[2:]})" if loss else ""))
    raise errors.Diverged(f"training diverged {what}; stopped without saving them, {kept}. "
                          f"Try a lower learning_rate or a warm-up")
