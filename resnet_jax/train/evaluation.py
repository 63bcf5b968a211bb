"""Evaluating a model's variables on every held-out example exactly once, and recording the
result: the report (per-class table, confusion matrix) and the figures. Shared by the training
loop and the evaluate command (`evaluate_weights`)."""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from resnet_jax.data import batching
from resnet_jax.launch import sharding
from resnet_jax.train import metrics, plots


def evaluate(eval_fn, variables, source, eval_batch_size: int, mesh, show_progress: bool):
    """Every eval example exactly once; returns (values, labels, predictions) on the host, where
    values are the mean loss/top-1/top-5 and the example count."""
    sums, labels, predictions = None, [], []
    batches = batching.eval_batches(source, eval_batch_size, jax.process_index(),
                                    jax.process_count())
    total = batching.num_eval_batches(source, eval_batch_size)
    for batch in tqdm(sharding.prefetch_to_mesh(batches, mesh), total=total, desc="eval",
                      leave=False, disable=not show_progress):
        batch_sums, batch_predictions = eval_fn(variables, batch)
        sums = batch_sums if sums is None else jax.tree_util.tree_map(jnp.add, sums, batch_sums)
        mask = np.asarray(jax.device_get(_replicated_value(batch["mask"])))
        labels.append(np.asarray(jax.device_get(_replicated_value(batch["label"])))[mask])
        predictions.append(np.asarray(batch_predictions)[mask])
    sums = jax.device_get(sums)
    values = {**metrics.means(sums), "count": int(sums["count"])}
    labels, predictions = np.concatenate(labels), np.concatenate(predictions)
    if source.info.multilabel:  # predictions: each class's probability
        values["map"], _ = metrics.mean_average_precision(labels, predictions)
    return values, labels, predictions


def _replicated_value(array):
    """A global (sharded) batch array as a host numpy array, on every process."""
    if jax.process_count() == 1:
        return array
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(array, tiled=True)


def summary(values: dict, examples: str = "held-out examples") -> str:
    mean_ap = f"mAP {values['map']:.4f}, " if "map" in values else ""
    return (f"{mean_ap}top-1 {values['top1']:.4f}, top-5 {values['top5']:.4f}, loss "
            f"{values['loss']:.4f} on {values['count']} {examples}")


def record(workdir: str, name: str, labels, predictions, values: dict, class_names,
           header: str, threshold: float | None = None) -> str:
    """Writes WORKDIR/report{name}.txt and plots/confusion_matrix{name}.png (name: '' for the
    training run's own evaluation, '_SPLIT' for the evaluate command's); returns the report's
    path. A multi-label task (`threshold` given) gets the multi-label report, no matrix."""
    report = os.path.join(workdir, f"report{name}.txt")
    matrix = write_report(report, labels, predictions, values, class_names, header, threshold)
    if matrix is None:
        return report
    os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
    plots.confusion_matrix(matrix, class_names,
                           os.path.join(workdir, "plots", f"confusion_matrix{name}.png"),
                           f"{header}\ntop-1 {values['top1']:.4f}")
    return report


def write_report(path: str, labels, predictions, values: dict, class_names, header: str,
                 threshold: float | None = None):
    """The report at `path`: the multi-label one where `threshold` is given (returns None),
    else the per-class table and confusion matrix (returns the matrix)."""
    if threshold is not None:
        metrics.write_multilabel_report(path, labels, predictions, threshold, class_names,
                                        header)
        return None
    return metrics.write_report(path, labels, predictions, values["top5"], class_names, header)


def plot_curves(workdir: str, title: str) -> None:
    os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
    plots.training_curves(metrics.read_rows(os.path.join(workdir, "metrics.jsonl")),
                          os.path.join(workdir, "plots", "training_curves.png"), title)


def multilabel_classes(info) -> int:
    """The class count of a multi-label dataset (its labels' width), 0 for one label."""
    return info.num_classes if info.multilabel else 0


def threshold_of(config, info) -> float | None:
    """The probability from which a multi-label run predicts a label; None for one label."""
    return config.threshold if info.multilabel else None


def _split_name(info, split: str | None) -> str:
    name = split or os.path.basename(os.path.normpath(info.eval_from)) or "eval"
    return name if "held out" not in info.eval_from else "holdout"


def _weights_from_config(config, info) -> tuple:
    """(model, variables) for config.model with every tensor loaded from config.init_from."""
    from resnet_jax.train import warm_start
    from resnet_jax.train.config import model_from_config

    model = model_from_config(config, info.num_classes, info.image_shape[-1])
    variables, summary_line = warm_start.initialised_from(model, info.image_shape,
                                                          config.init_from, config.model,
                                                          complete=True)
    print(summary_line, flush=True)
    return model, variables


def evaluate_weights(*, workdir: str | None = None, config=None, data_dir: str | None = None,
                     split: str | None = None, report: str | None = None) -> dict:
    """What `evaluate.py` does: WORKDIR's latest checkpoint (on its recorded config), or the
    weights `config.init_from` names, evaluated on every example of the split once. A run gets
    WORKDIR/report_SPLIT.txt and its figure; weights get `report` if given. Returns the values."""
    from resnet_jax import environment
    from resnet_jax.data import datasets
    from resnet_jax.errors import UserError
    from resnet_jax.train import inference, steps
    from resnet_jax.train.config import validate_config

    if workdir:
        run = inference.from_workdir(workdir)
        config = run.config
    elif not config.init_from:
        raise UserError("--config without --workdir evaluates the weights that "
                        "--config.init_from names; set it")
    if data_dir is not None:
        config.data_dir = data_dir
    if split is not None:
        config.eval_split = split
    validate_config(config)
    source = datasets.create_source(config)
    info = source.info
    mesh = sharding.create_mesh()
    environment.announce(config.kernels, config.dtype)
    if workdir:
        if tuple(info.class_names) != tuple(run.class_names):
            raise UserError(f"the data's classes ({', '.join(info.class_names[:8])}...) are "
                            f"not the run's ({', '.join(run.class_names[:8])}...)")
        model, variables, what = run.model, run.variables, f"{workdir} at step {run.step}"
    else:
        (model, variables), what = _weights_from_config(config, info), config.init_from
    variables = jax.device_put(variables, sharding.replicated(mesh))
    eval_fn, _ = steps.compile_eval_step(
        model.apply, variables, mesh,
        (config.eval_batch_size // jax.process_count(), *info.eval_shape),
        info.pixel_normalization, multilabel_classes(info))
    values, labels, predictions = evaluate(eval_fn, variables, source, config.eval_batch_size,
                                           mesh, sys.stderr.isatty())
    header = f"{what}: {config.model} on {info.name}, evaluated on {info.eval_from}"
    examples = "training examples" if config.eval_split == "train" else "held-out examples"
    print(f"{header}\n{summary(values, examples)}", flush=True)
    if jax.process_index() == 0 and workdir:
        path = record(workdir, f"_{_split_name(info, split)}", labels, predictions, values,
                      info.class_names, header, threshold_of(config, info))
        print(f"report: {path}", flush=True)
    elif jax.process_index() == 0 and report:
        write_report(report, labels, predictions, values, info.class_names, header,
                     threshold_of(config, info))
        print(f"report: {report}", flush=True)
    return values
