"""Optax optimizers and learning-rate schedules built from the config.

`sgd` is the exact twin of `torch.optim.SGD` with coupled weight decay:
    g += wd * p;  buf = m * buf + g;  p -= lr * buf      (Nesterov: p -= lr * (g + m * buf))
"""

from __future__ import annotations

from typing import Any, Callable

import optax


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
