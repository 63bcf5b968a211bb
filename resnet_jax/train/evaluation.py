"""Evaluating a state on every held-out example exactly once, and recording the result: the
report (per-class table, confusion matrix) and the figures. Shared by the training loop and
the evaluate command."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from resnet_jax.data import batching
from resnet_jax.launch import sharding
from resnet_jax.train import metrics, plots


def evaluate(eval_fn, state, source, eval_batch_size: int, mesh, show_progress: bool):
    """Every eval example exactly once; returns (values, labels, predictions) on the host, where
    values are the mean loss/top-1/top-5 and the example count."""
    sums, labels, predictions = None, [], []
    batches = batching.eval_batches(source, eval_batch_size, jax.process_index(),
                                    jax.process_count())
    total = batching.num_eval_batches(source, eval_batch_size)
    for batch in tqdm(sharding.prefetch_to_mesh(batches, mesh), total=total, desc="eval",
                      leave=False, disable=not show_progress):
        batch_sums, batch_predictions = eval_fn(state, batch)
        sums = batch_sums if sums is None else jax.tree_util.tree_map(jnp.add, sums, batch_sums)
        mask = np.asarray(jax.device_get(_replicated_value(batch["mask"])))
        labels.append(np.asarray(jax.device_get(_replicated_value(batch["label"])))[mask])
        predictions.append(np.asarray(batch_predictions)[mask])
    sums = jax.device_get(sums)
    values = {**metrics.means(sums), "count": int(sums["count"])}
    return values, np.concatenate(labels), np.concatenate(predictions)


def _replicated_value(array):
    """A global (sharded) batch array as a host numpy array, on every process."""
    if jax.process_count() == 1:
        return array
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(array, tiled=True)


def summary(values: dict, examples: str = "held-out examples") -> str:
    return (f"top-1 {values['top1']:.4f}, top-5 {values['top5']:.4f}, loss "
            f"{values['loss']:.4f} on {values['count']} {examples}")


def record(workdir: str, name: str, labels, predictions, values: dict, class_names,
           header: str) -> str:
    """Writes WORKDIR/report{name}.txt and plots/confusion_matrix{name}.png (name: '' for the
    training run's own evaluation, '_SPLIT' for the evaluate command's); returns the report's
    path."""
    report = os.path.join(workdir, f"report{name}.txt")
    matrix = metrics.write_report(report, labels, predictions, values["top5"], class_names,
                                  header)
    os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
    plots.confusion_matrix(matrix, class_names,
                           os.path.join(workdir, "plots", f"confusion_matrix{name}.png"),
                           f"{header}\ntop-1 {values['top1']:.4f}")
    return report


def plot_curves(workdir: str, title: str) -> None:
    os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
    plots.training_curves(metrics.read_rows(os.path.join(workdir, "metrics.jsonl")),
                          os.path.join(workdir, "plots", "training_curves.png"), title)
