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
from flax.training import train_state

from resnet_jax import tasks
from resnet_jax.launch import sharding
from resnet_jax.models import parts
from resnet_jax.models.inputs import normalize_images
from resnet_jax.plan import StepSpec
from resnet_jax.train import batch_augment, ema, metrics, trainable

# The defaults of the steps' keyword arguments: one class per image, one micro-batch, no
# dropout rng, no batch augmentation.
SINGLE_LABEL = tasks.Classification()
DEFAULT_STEP = StepSpec(SINGLE_LABEL)


class TrainState(train_state.TrainState):
    batch_stats: Any
    # With EMA on (`ema.EmaConfig`): {"params", "batch_stats", "count"}, the averaged model.
    ema: Any = None


def create_train_state(model, tx, image_shape, rng, with_ema: bool = False) -> TrainState:
    variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                              batch_stats=variables["batch_stats"], tx=tx)
    return state.replace(ema=ema.initial(state.params, state.batch_stats)) if with_ema else state


def train_step(state: TrainState, batch: dict, *, spec: StepSpec = DEFAULT_STEP,
               num_shards: int = 1, normalization=None, trains=None,
               ema_config: ema.EmaConfig | None = None):
    """One SGD step on a global batch; returns the new state and metric sums (on device).

    `spec.task` says what the labels are, the loss and the metric sums (`resnet_jax.tasks`).

    Whether the loss and gradients were finite is counted in the sums (`metrics.
    nonfinite_sums`): a divergence is detected without a host sync per step; the loop stops the
    run at its next look at the sums, before any save.

    With `spec.accumulation_steps` k > 1 the batch is processed as k micro-batches in sequence
    (a `lax.scan`: activations of one micro-batch at a time) and their gradients averaged
    before a single optimizer update, so the step, and the learning-rate schedule, count
    optimizer steps. Micro-batch i takes the i-th chunk of each of the `num_shards` shards of
    the batch (one per device: no data moves between devices). Each micro-batch's forward
    starts from the same running statistics and the new ones are averaged, so that with
    batch-norm groups no larger than a per-device micro-batch the step equals the whole batch's
    step (see `BatchNorm`). `normalization`: see `normalize_images`.

    `spec.augment`: random erasing, mixup/cutmix on the normalised batch first
    (`batch_augment`); the labels become the task's target rows, blended.

    `spec.dropout_seed`: the model draws from a "dropout" rng (stochastic depth, head
    dropout), keyed by (dropout_seed, step, micro-batch).

    `ema_config`: after the update, the EMA of the weights and statistics (`ema.update`).

    `trains`: a pytree of bools like the parameters (`trainable.mask`), or None (all train):
    no gradient flows into a frozen parameter (XLA drops the backward pass nothing else needs)
    and the optimizer leaves it unchanged (`optim.create_optimizer`); the model's
    `eval_mode_norms` keep the statistics of frozen stages as they are.
    """
    task, accumulation_steps = spec.task, spec.accumulation_steps
    dropout_seed = spec.dropout_seed
    if spec.augment is not None:
        images = normalize_images(batch["image"], normalization)
        targets = task.targets(batch["label"], parts.num_classes(state.params))
        images, targets = batch_augment.apply(spec.augment, state.step, images, targets)
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
        return task.loss(logits, labels), (logits, new_variables["batch_stats"])

    def micro_step(images, labels, micro_index=0):
        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, images, labels, micro_index)
        sums = task.sums(logits, labels)
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


def eval_step(variables: dict, batch: dict, *, apply_fn,
              task: tasks.Task = SINGLE_LABEL, normalization=None):
    """Metric sums over the unmasked examples, plus what the task keeps of each example for the
    report (`task.outputs`: the class index, or each class's probability). `variables`:
    {"params", "batch_stats"} (a run's, a weights file's, or the EMA's)."""
    logits = apply_fn(variables, normalize_images(batch["image"], normalization), train=False)
    return task.sums(logits, batch["label"], batch["mask"]), task.outputs(logits)


def _compile(step_fn, state, mesh, local_batch_shape, batch_keys, train: bool,
             image_dtype=jnp.float32, label_spec=((), "int32")):
    """Jits `step_fn(state, batch)` with explicit shardings (state, or an eval step's variables,
    replicated; batch sharded on `data`) and compiles it once for the global batch; returns
    (compiled, seconds). `label_spec`: a batch's labels after the batch axis, and their dtype.

    A training step returns (state, metrics) and donates its input state; an eval step returns
    (metrics, predictions), all replicated.
    """
    repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    state_sharding = jax.tree_util.tree_map(lambda _: repl, state)
    global_batch = (local_batch_shape[0] * jax.process_count(), *local_batch_shape[1:])
    label_shape, label_dtype = label_spec
    leaves = {"image": (global_batch, image_dtype),
              "label": ((global_batch[0], *label_shape), jnp.dtype(label_dtype)),
              "mask": (global_batch[:1], jnp.bool_)}
    batch = {k: jax.ShapeDtypeStruct(*leaves[k], sharding=data) for k in batch_keys}
    start = time.perf_counter()
    compiled = jax.jit(step_fn, in_shardings=(state_sharding, data),
                       out_shardings=(state_sharding if train else repl, repl),
                       donate_argnums=0 if train else ()).lower(state, batch).compile()
    return compiled, time.perf_counter() - start


def _image_dtype(normalization):
    return jnp.float32 if normalization is None else jnp.uint8


def compile_train_step(state, mesh, local_batch_shape, spec: StepSpec = DEFAULT_STEP,
                       normalization=None, trains=None, ema_config=None):
    """The training step, compiled once with explicit shardings and donated state, timed.
    `normalization` (mean, std): the batches hold uint8 pixels (`normalize_images`)."""
    step_fn = functools.partial(train_step, spec=spec, num_shards=mesh.size,
                                normalization=normalization, trains=trains,
                                ema_config=ema_config)
    return _compile(step_fn, state, mesh, local_batch_shape, ("image", "label"), train=True,
                    image_dtype=_image_dtype(normalization),
                    label_spec=spec.task.label_spec(parts.num_classes(state.params)))


def compile_eval_step(apply_fn, variables, mesh, local_batch_shape,
                      task: tasks.Task = SINGLE_LABEL, normalization=None):
    """The evaluation step `(variables, batch) -> (sums, outputs)` of the model whose `apply`
    is `apply_fn`, on masked batches, compiled once, timed."""
    step_fn = functools.partial(eval_step, apply_fn=apply_fn, task=task,
                                normalization=normalization)
    return _compile(step_fn, variables, mesh, local_batch_shape, ("image", "label", "mask"),
                    train=False, image_dtype=_image_dtype(normalization),
                    label_spec=task.label_spec(parts.num_classes(variables["params"])))
