"""The jitted computations: TrainState, train_step, eval_step. jax/flax/optax only.

Kept free of TensorFlow so that `resnet_jax.bench` times exactly what `train.py` runs on a
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

from resnet_jax.launch import sharding
from resnet_jax.train import batch_augment, ema, metrics, trainable
from resnet_jax.train.optim import HEAD  # the classifier


class TrainState(train_state.TrainState):
    batch_stats: Any
    # With EMA on (`ema.EmaConfig`): {"params", "batch_stats", "count"}, the averaged model.
    ema: Any = None


def create_train_state(model, tx, image_shape, rng, with_ema: bool = False) -> TrainState:
    variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                              batch_stats=variables["batch_stats"], tx=tx)
    return state.replace(ema=ema.initial(state.params, state.batch_stats)) if with_ema else state


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0):
    """Mean cross entropy against integer `labels` (B,) or soft targets (B, num_classes) (from
    mixup/cutmix), smoothed as torch's `label_smoothing` smooths either."""
    targets = labels if labels.ndim == 2 else jax.nn.one_hot(labels, num_classes)
    targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()


def normalize_images(images, normalization):
    """The model's input: `images` as they are (normalization None), or uint8 pixels as
    (pixels - mean) / std per channel in float32, fused by XLA into the first layer's input."""
    if normalization is None:
        return images
    mean, std = (jnp.asarray(values, jnp.float32) for values in normalization)
    return (images.astype(jnp.float32) - mean) / std


def train_step(state: TrainState, batch: dict, *, label_smoothing: float = 0.0,
               accumulation_steps: int = 1, num_shards: int = 1, normalization=None,
               trains=None, ema_config: ema.EmaConfig | None = None,
               augment: batch_augment.BatchAugment | None = None,
               dropout_seed: int | None = None, multilabel: bool = False):
    """One SGD step on a global batch; returns the new state and metric sums (on device).

    `multilabel`: the labels are (B, classes) multi-hot rows and the loss is a sigmoid binary
    cross-entropy per class (`metrics.multilabel_sums`).

    Whether the loss and gradients were finite is counted in the sums (`metrics.
    nonfinite_sums`): a divergence is detected without a host sync per step; the loop stops the
    run at its next look at the sums, before any save.

    With `accumulation_steps` k > 1 the batch is processed as k micro-batches in sequence (a
    `lax.scan`: activations of one micro-batch at a time) and their gradients averaged before a
    single optimizer update, so the step, and the learning-rate schedule, count optimizer steps.
    Micro-batch i takes the i-th chunk of each of the `num_shards` shards of the batch (one per
    device: no data moves between devices). Each micro-batch's forward starts from the same
    running statistics and the new ones are averaged, so that with batch-norm groups no larger
    than a per-device micro-batch the step equals the whole batch's step (see `BatchNorm`).
    `normalization`: see `normalize_images`.

    `augment`: random erasing, mixup/cutmix on the normalised batch first
    (`batch_augment`); the labels become soft targets and the metrics count the top-1 against
    their argmax, as torchvision's reference does.

    `dropout_seed`: the model draws from a "dropout" rng (stochastic depth), keyed by
    (dropout_seed, step, micro-batch).

    `ema_config`: after the update, the EMA of the weights and statistics (`ema.update`).

    `trains`: a pytree of bools like the parameters (`trainable.mask`), or None (all train):
    no gradient flows into a frozen parameter (XLA drops the backward pass nothing else needs)
    and the optimizer leaves it unchanged (`optim.create_optimizer`); the model's
    `eval_mode_norms` keep the statistics of frozen stages as they are.
    """

    if augment is not None:
        images = normalize_images(batch["image"], normalization)
        targets = jax.nn.one_hot(batch["label"], state.params[HEAD]["kernel"].shape[-1])
        images, targets = batch_augment.apply(augment, state.step, images, targets)
        batch, normalization = {"image": images, "label": targets}, None

    def loss_fn(params, images, labels, micro_index):
        images = normalize_images(images, normalization)
        variables = {"params": params, "batch_stats": state.batch_stats}
        rngs = {} if dropout_seed is None else {"dropout": jax.random.fold_in(jax.random.fold_in(
            jax.random.PRNGKey(dropout_seed), state.step), micro_index)}
        if trains is not None:
            variables["params"] = trainable.stop_frozen_gradients(params, trains)
        logits, new_variables = state.apply_fn(variables, images, train=True,
                                               mutable=["batch_stats"], rngs=rngs)
        batch_stats = new_variables["batch_stats"]
        if multilabel:  # (B, classes) multi-hot targets: a sigmoid per class
            loss = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                                      labels).mean()
        else:
            loss = cross_entropy(logits, labels, logits.shape[-1], label_smoothing)
        return loss, (logits, batch_stats)

    def micro_step(images, labels, micro_index=0):
        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, images, labels, micro_index)
        sums = metrics.multilabel_sums(logits, labels) if multilabel else \
            metrics.classification_sums(
                logits, labels if labels.ndim == 1 else jnp.argmax(labels, axis=-1))
        sums["loss"] = loss * sums["count"]  # the objective actually minimised
        return grads, batch_stats, sums

    if accumulation_steps == 1:
        grads, batch_stats, sums = micro_step(batch["image"], batch["label"])
    else:
        def accumulate(totals, micro_batch):
            outputs = micro_step(micro_batch["image"], micro_batch["label"],
                                 micro_batch["index"])
            return jax.tree_util.tree_map(jnp.add, totals, outputs), None

        micro_batches = split_micro_batches(batch, accumulation_steps, num_shards)
        micro_batches["index"] = jnp.arange(accumulation_steps)
        zeros = jax.tree_util.tree_map(
            jnp.zeros_like, jax.eval_shape(micro_step, micro_batches["image"][0],
                                           micro_batches["label"][0]))
        (grads, batch_stats, sums), _ = jax.lax.scan(accumulate, zeros, micro_batches)
        grads, batch_stats = jax.tree_util.tree_map(
            lambda total: total / accumulation_steps, (grads, batch_stats))
    sums.update(metrics.nonfinite_sums(all_finite((sums["loss"], grads)), state.step))
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    if ema_config is not None:
        new_state = new_state.replace(ema=ema.update(
            state.ema, new_state.params, new_state.batch_stats, state.step, ema_config))
    return new_state, sums


def all_finite(tree) -> jax.Array:
    """Whether every value in `tree` is finite: one boolean, computed on the device. Over the
    gradients it fuses with the backward pass (measured: no cost on the resnet20 step)."""
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves))


def split_micro_batches(batch: dict, accumulation_steps: int, num_shards: int) -> dict:
    """(B, ...) arrays -> (k, B/k, ...): micro-batch i holds the i-th of k chunks of each of the
    `num_shards` contiguous shards, so a batch sharded over that many devices splits locally."""
    def split(x):
        chunk = x.shape[0] // (num_shards * accumulation_steps)
        x = x.reshape(num_shards, accumulation_steps, chunk, *x.shape[1:])  # (D, k, c, ...)
        return jnp.swapaxes(x, 0, 1).reshape(accumulation_steps, num_shards * chunk,
                                             *x.shape[3:])  # (k, D*c, ...)
    return jax.tree_util.tree_map(split, batch)


def variables_of(state: TrainState) -> dict:
    """What a model in eval mode needs of a training state."""
    return {"params": state.params, "batch_stats": state.batch_stats}


def eval_step(variables: dict, batch: dict, *, apply_fn, normalization=None,
              multilabel: bool = False):
    """Metric sums over the unmasked examples, plus predictions for the report: the class
    index, or with `multilabel` each class's probability (a sigmoid). `variables`:
    {"params", "batch_stats"} (a run's, a weights file's, or the EMA's)."""
    logits = apply_fn(variables, normalize_images(batch["image"], normalization), train=False)
    if multilabel:
        sums = metrics.multilabel_sums(logits, batch["label"], batch["mask"])
        return sums, jax.nn.sigmoid(logits.astype(jnp.float32))
    sums = metrics.classification_sums(logits, batch["label"], batch["mask"])
    return sums, jnp.argmax(logits, axis=-1)


def _compile(step_fn, state, mesh, local_batch_shape, batch_keys, train: bool,
             image_dtype=jnp.float32, multilabel_classes: int = 0):
    """Jits `step_fn(state, batch)` with explicit shardings (state, or an eval step's variables,
    replicated; batch sharded on `data`) and compiles it once for the global batch; returns
    (compiled, seconds).

    A training step returns (state, metrics) and donates its input state; an eval step returns
    (metrics, predictions), all replicated.
    """
    repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    state_sharding = jax.tree_util.tree_map(lambda _: repl, state)
    global_batch = (local_batch_shape[0] * jax.process_count(), *local_batch_shape[1:])
    label = ((global_batch[0], multilabel_classes), jnp.float32) if multilabel_classes else \
        (global_batch[:1], jnp.int32)
    leaves = {"image": (global_batch, image_dtype), "label": label,
              "mask": (global_batch[:1], jnp.bool_)}
    batch = {k: jax.ShapeDtypeStruct(*leaves[k], sharding=data) for k in batch_keys}
    start = time.perf_counter()
    compiled = jax.jit(step_fn, in_shardings=(state_sharding, data),
                       out_shardings=(state_sharding if train else repl, repl),
                       donate_argnums=0 if train else ()).lower(state, batch).compile()
    return compiled, time.perf_counter() - start


def _image_dtype(normalization):
    return jnp.float32 if normalization is None else jnp.uint8


def compile_train_step(state, mesh, local_batch_shape, label_smoothing,
                       accumulation_steps: int = 1, normalization=None,
                       trains=None, ema_config=None, augment=None,
                       dropout_seed=None, multilabel_classes: int = 0):
    """The training step, compiled once with explicit shardings and donated state, timed.
    `normalization` (mean, std): the batches hold uint8 pixels (`normalize_images`).
    `multilabel_classes` > 0: the labels are multi-hot rows of that many classes."""
    step_fn = functools.partial(train_step, label_smoothing=label_smoothing,
                                accumulation_steps=accumulation_steps, num_shards=mesh.size,
                                normalization=normalization, trains=trains,
                                ema_config=ema_config, augment=augment,
                                dropout_seed=dropout_seed, multilabel=multilabel_classes > 0)
    return _compile(step_fn, state, mesh, local_batch_shape, ("image", "label"), train=True,
                    image_dtype=_image_dtype(normalization),
                    multilabel_classes=multilabel_classes)


def compile_eval_step(apply_fn, variables, mesh, local_batch_shape, normalization=None,
                      multilabel_classes: int = 0):
    """The evaluation step `(variables, batch) -> (sums, predictions)` of the model whose
    `apply` is `apply_fn`, on masked batches, compiled once, timed."""
    step_fn = functools.partial(eval_step, apply_fn=apply_fn, normalization=normalization,
                                multilabel=multilabel_classes > 0)
    return _compile(step_fn, variables, mesh, local_batch_shape, ("image", "label", "mask"),
                    train=False, image_dtype=_image_dtype(normalization),
                    multilabel_classes=multilabel_classes)
