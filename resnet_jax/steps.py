"""The jitted computations: TrainState, train_step, eval_step. jax/flax/optax only.

Kept free of TensorFlow so that `resnet_jax.benchmark` times exactly what `train.py` runs on a
bare JAX(+PyTorch) accelerator image.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from resnet_jax import metrics, parallel


class TrainState(train_state.TrainState):
    batch_stats: Any


def create_train_state(model, tx, image_shape, rng) -> TrainState:
    variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"],
                             batch_stats=variables["batch_stats"], tx=tx)


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0):
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()


def train_step(state: TrainState, batch: dict, *, label_smoothing: float = 0.0):
    """One SGD step on a global batch; returns the new state and metric sums (on device)."""

    def loss_fn(params):
        logits, new_variables = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
            mutable=["batch_stats"])
        loss = cross_entropy(logits, batch["label"], logits.shape[-1], label_smoothing)
        return loss, (logits, new_variables["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    sums = metrics.classification_sums(logits, batch["label"])
    sums["loss"] = loss * sums["count"]  # the objective actually minimised
    return state, sums


def eval_step(state: TrainState, batch: dict):
    """Metric sums over the unmasked examples, plus predictions for the report."""
    logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                            batch["image"], train=False)
    sums = metrics.classification_sums(logits, batch["label"], batch["mask"])
    return sums, jnp.argmax(logits, axis=-1)


def _compile(step_fn, state, mesh, local_batch_shape, batch_keys, train: bool):
    """Jits `step_fn(state, batch)` with explicit shardings (state replicated, batch sharded on
    `data`) and compiles it once for the global batch; returns (compiled, seconds).

    A training step returns (state, metrics) and donates its input state; an eval step returns
    (metrics, predictions), all replicated.
    """
    repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    state_sharding = jax.tree_util.tree_map(lambda _: repl, state)
    global_batch = (local_batch_shape[0] * jax.process_count(), *local_batch_shape[1:])
    leaves = {"image": (global_batch, jnp.float32), "label": (global_batch[:1], jnp.int32),
              "mask": (global_batch[:1], jnp.bool_)}
    batch = {k: jax.ShapeDtypeStruct(*leaves[k], sharding=data) for k in batch_keys}
    start = time.perf_counter()
    compiled = jax.jit(step_fn, in_shardings=(state_sharding, data),
                       out_shardings=(state_sharding if train else repl, repl),
                       donate_argnums=0 if train else ()).lower(state, batch).compile()
    return compiled, time.perf_counter() - start


def compile_train_step(state, mesh, local_batch_shape, label_smoothing):
    """The training step, compiled once with explicit shardings and donated state, timed."""
    return _compile(functools.partial(train_step, label_smoothing=label_smoothing), state, mesh,
                    local_batch_shape, ("image", "label"), train=True)


def compile_eval_step(state, mesh, local_batch_shape):
    """The evaluation step (masked batches), compiled once, timed."""
    return _compile(eval_step, state, mesh, local_batch_shape, ("image", "label", "mask"),
                    train=False)
