"""Optax optimizers and learning-rate schedules built from the plan's specs.

`adamw` is `torch.optim.AdamW` (decoupled weight decay: p -= lr * (adam step + wd * p)), with
the same parameter groups. `sgd` is the exact twin of `torch.optim.SGD` with coupled weight
decay:
    g += wd * p;  buf = m * buf + g;  p -= lr * buf      (Nesterov: p -= lr * (g + m * buf))
with torchvision's parameter groups (`--norm-weight-decay`, `--bias-weight-decay`) and
`clip_grad_norm_` before it. `lars` is MLPerf's reference LARS (`mlperf_lars`), with its
polynomial warm-up/decay schedule (`schedule="polynomial"`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from resnet_jax.models import parts
from resnet_jax.plan import OptimizerSpec, ScheduleSpec, WeightDecays


def sgd(learning_rate: float | optax.Schedule, *, momentum: float = 0.9, nesterov: bool = False,
        weight_decay: float | dict[str, float] = 0.0, decay_mask: Any | Callable | None = None
        ) -> optax.GradientTransformation:
    """SGD with momentum and torch-style (coupled, L2) weight decay.

    The decay is added to the gradient *before* momentum, as torch does; `decay_mask` (a pytree
    of bools or a function of the params) limits it, e.g. to exclude batch-norm parameters.
    `weight_decay` may also give each parameter kind its decay (`WeightDecays`: torch's
    parameter groups).
    """
    decay = (add_weight_decays(weight_decay) if isinstance(weight_decay, WeightDecays)
             else optax.add_decayed_weights(weight_decay, mask=decay_mask))
    return optax.chain(decay, optax.sgd(learning_rate, momentum=momentum or None,
                                        nesterov=nesterov))


def adamw(learning_rate: float | optax.Schedule, *, betas: tuple[float, float] = (0.9, 0.999),
          epsilon: float = 1e-8, weight_decay: WeightDecays | None = None
          ) -> optax.GradientTransformation:
    """torch.optim.AdamW: Adam's bias-corrected step m_hat / (sqrt(v_hat) + eps), plus the
    decoupled decay wd * p of each parameter's kind, both times the learning rate (torch's
    p *= 1 - lr * wd before the step is the same update)."""
    return optax.chain(optax.scale_by_adam(*betas, eps=epsilon),
                       add_weight_decays(weight_decay or WeightDecays()),
                       optax.scale_by_learning_rate(learning_rate))


# --- parameter kinds (torchvision's parameter groups) ---------------------------------------

def parameter_kinds(params):
    """"weight" (conv and dense kernels), "norm" (batch-norm scales and biases) or "bias"
    (the classifier's bias) for each parameter: torchvision's `set_weight_decay` groups."""
    def kind(path, value):
        if value.ndim > 1:
            return "weight"
        return "bias" if getattr(path[0], "key", None) == parts.CLASSIFIER else "norm"
    return jax.tree_util.tree_map_with_path(kind, params)


def decay_mask(params):
    """True for conv and dense kernels; False for batch-norm scales/biases and Dense biases."""
    return jax.tree_util.tree_map(lambda kind: kind == "weight", parameter_kinds(params))


def add_weight_decays(decays: WeightDecays) -> optax.GradientTransformation:
    """g += wd_kind * p, each parameter with the decay of its kind (torch's param groups)."""
    def update(updates, state, params):
        kinds = parameter_kinds(params)
        return jax.tree_util.tree_map(
            lambda g, p, kind: g + decays.of(kind) * p if decays.of(kind) else g,
            updates, params, kinds), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def layer_ids(params) -> tuple[object, int]:
    """(a pytree of each parameter's layer number, the number of layers), grouped as timm's
    `param_groups_layer_decay` groups a ResNet (its `group_matcher(coarse=False)`): the stem
    0, each residual block its own layer in network order, the head (with any hidden layer)
    the last."""
    blocks = parts.blocks_in_order(params)
    number = {name: i + 1 for i, name in enumerate(blocks)}
    last = len(blocks) + 1

    def layer(path, _):
        top = getattr(path[0], "key", str(path[0]))
        return 0 if parts.part_of(top) == "stem" else number.get(top, last)
    return jax.tree_util.tree_map_with_path(layer, params), last + 1


def scale_by_layer(decay: float) -> optax.GradientTransformation:
    """Each update times decay^(last layer - its layer) (`layer_ids`): timm's layer-wise
    learning-rate decay. After SGD or LARS, whose updates are linear in the rate, this equals
    a learning rate per layer, as timm's parameter groups have, under every schedule."""
    def update(updates, state, params=None):
        ids, count = layer_ids(updates)
        return jax.tree_util.tree_map(lambda u, i: u * decay ** (count - 1 - i), updates,
                                      ids), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def clip_grad_norm(max_norm: float) -> optax.GradientTransformation:
    """`torch.nn.utils.clip_grad_norm_`: g *= min(1, max_norm / (||g||_2 + 1e-6)), the norm over
    all gradients together (optax's `clip_by_global_norm` has no 1e-6 and divides differently)."""
    def update(updates, state, params=None):
        total = optax.tree.norm(updates)
        scale = jnp.minimum(max_norm / (total + 1e-6), 1.0)
        return jax.tree_util.tree_map(lambda g: g * scale.astype(g.dtype), updates), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


# --- LARS as MLPerf's reference defines it --------------------------------------------------

class LarsState(NamedTuple):
    count: jax.Array
    momentum: Any


def mlperf_lars(learning_rate: optax.Schedule, *, momentum: float = 0.9,
                weight_decay: float = 5e-5, eeta: float = 0.001, epsilon: float = 0.0,
                nesterov: bool = False, lars_mask: Callable = decay_mask
                ) -> optax.GradientTransformation:
    """MLPerf's reference LARS (mlcommons/training, image_classification/tensorflow2/
    lars_optimizer.py), for the parameters `lars_mask` selects (conv and dense kernels; the
    reference's skip_list excludes batch norm and biases):
        trust = eeta * ||w|| / (||g|| + wd * ||w|| + eps)   (1 where ||w|| or ||g|| is 0)
        lr' = lr * trust;  g' = g + wd * w
    and for the others lr' = lr, g' = g (no decay); then for every parameter
        v = m * v + lr' * g';  w -= v            (Nesterov: w -= m * v + lr' * g')
    `epsilon=0` means Keras's default epsilon, 1e-7, as the reference's `epsilon or
    backend_config.epsilon()` does. (optax.lars differs: its trust ratio divides by
    ||g + wd*w||.)"""
    eps = epsilon or 1e-7

    def init(params):
        return LarsState(jnp.zeros([], jnp.int32),
                         jax.tree_util.tree_map(jnp.zeros_like, params))

    def update(grads, state, params):
        lr = learning_rate(state.count)
        mask = lars_mask(params)

        def scaled(g, w, adapt):
            if not adapt:
                return lr * g
            w_norm, g_norm = jnp.linalg.norm(w.ravel()), jnp.linalg.norm(g.ravel())
            trust = jnp.where(w_norm > 0, jnp.where(
                g_norm > 0, eeta * w_norm / (g_norm + weight_decay * w_norm + eps), 1.0), 1.0)
            return (lr * trust) * (g + weight_decay * w)

        steps = jax.tree_util.tree_map(scaled, grads, params, mask)
        velocity = jax.tree_util.tree_map(lambda v, s: momentum * v + s, state.momentum, steps)
        if nesterov:
            updates = jax.tree_util.tree_map(lambda v, s: -(momentum * v + s), velocity, steps)
        else:
            updates = jax.tree_util.tree_map(jnp.negative, velocity)
        return updates, LarsState(state.count + 1, velocity)

    return optax.GradientTransformation(init, update)


# --- schedules ------------------------------------------------------------------------------

def polynomial_warmup_schedule(peak: float, end: float, warmup_steps: float, total_steps: int,
                               power: float = 2.0) -> optax.Schedule:
    """MLPerf's PolynomialDecayWithWarmup (lars_util.py): peak * step / warmup_steps up to
    warmup_steps, then Keras's PolynomialDecay(peak, decay_steps=total - warmup + 1, end,
    power) of (step - warmup_steps)."""
    decay_steps = total_steps - warmup_steps + 1

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = peak * step / max(warmup_steps, 1e-12)
        done = jnp.minimum(step - warmup_steps, decay_steps) / decay_steps
        poly = (peak - end) * (1.0 - done) ** power + end
        return jnp.where(step <= warmup_steps, warm, poly)
    return schedule


def create_schedule(spec: ScheduleSpec, steps_per_epoch: float,
                    total_steps: int) -> optax.Schedule:
    """Linear warm-up (from `warmup_start_factor` x the peak) then constant, piecewise-constant
    (the paper's) or cosine decay; or MLPerf's polynomial warm-up and decay. Counted in
    optimizer steps, or with `unit="epoch"` in whole epochs, as torchvision's reference steps
    its schedulers once an epoch (ceil(N / batch) iterations, its loader's length): the rate of
    step s is the per-epoch schedule's at epoch s // that."""
    if spec.unit == "step":
        return _schedule(spec, steps_per_epoch, total_steps)
    iterations = max(int(np.ceil(steps_per_epoch)), 1)
    per_epoch = _schedule(spec, 1.0, int(np.ceil(total_steps / iterations)))
    return lambda step: per_epoch(step // iterations)


def _schedule(spec: ScheduleSpec, steps_per_epoch: float, total_steps: int) -> optax.Schedule:
    peak = spec.peak
    if spec.name == "polynomial":
        return polynomial_warmup_schedule(peak, spec.end_learning_rate,
                                          spec.warmup_epochs * steps_per_epoch, total_steps,
                                          spec.poly_power)
    warmup = int(round(spec.warmup_epochs * steps_per_epoch))
    if spec.name == "constant":
        decay = optax.constant_schedule(peak)
    elif spec.name == "cosine":
        decay = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1))
    else:  # "piecewise"
        boundaries = list(spec.boundaries_steps) + [
            int(round(e * steps_per_epoch)) for e in spec.boundaries_epochs]
        decay = optax.piecewise_constant_schedule(
            peak, {b - warmup: spec.decay_factor for b in sorted(boundaries)})
    if warmup == 0:
        return decay
    return optax.join_schedules(
        [optax.linear_schedule(spec.warmup_start_factor * peak, peak, warmup), decay],
        boundaries=[warmup])


def create_optimizer(spec: OptimizerSpec, schedule: optax.Schedule) -> optax.GradientTransformation:
    """SGD as torch's (or AdamW as torch's, or MLPerf's LARS), after gradient clipping if
    asked; for the
    `trainable` parts only (the rest is left exactly as it is: no update, no weight decay, no
    optimiser state)."""
    if spec.name == "adamw":
        tx = adamw(schedule, betas=spec.adam_betas, epsilon=spec.adam_epsilon,
                   weight_decay=spec.weight_decays)
    elif spec.name == "lars":
        tx = mlperf_lars(schedule, momentum=spec.momentum, weight_decay=spec.weight_decays.weight,
                         eeta=spec.lars_eeta, epsilon=spec.lars_epsilon, nesterov=spec.nesterov)
    else:
        tx = sgd(schedule, momentum=spec.momentum, nesterov=spec.nesterov,
                 weight_decay=spec.weight_decays)
    if spec.grad_clip_norm > 0:
        tx = optax.chain(clip_grad_norm(spec.grad_clip_norm), tx)
    if spec.layer_decay < 1:
        tx = optax.chain(tx, scale_by_layer(spec.layer_decay))
    if spec.trainable is None:
        return tx
    from resnet_jax.train import trainable

    def labels(params):
        return jax.tree_util.tree_map(lambda trains: "train" if trains else "frozen",
                                      trainable.mask(params, spec.trainable))

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
