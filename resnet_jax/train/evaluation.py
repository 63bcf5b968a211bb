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

from resnet_jax import tasks
from resnet_jax.data import batching
from resnet_jax.launch import sharding
from resnet_jax.models import kernels
from resnet_jax.runs import history, plots
from resnet_jax.train import metrics


def evaluate(eval_fn, variables, source, eval_batch_size: int, mesh, show_progress: bool,
             task: tasks.Task):
    """Every eval example exactly once; returns (values, labels, outputs) on the host, where
    values are the mean loss/top-1/top-5, the example count and the task's own (mAP)."""
    sums, labels, outputs = None, [], []
    batches = batching.eval_batches(source, eval_batch_size, jax.process_index(),
                                    jax.process_count())
    total = batching.num_eval_batches(source, eval_batch_size)
    for batch in tqdm(sharding.prefetch_to_mesh(batches, mesh), total=total, desc="eval",
                      leave=False, disable=not show_progress):
        batch_sums, batch_outputs = eval_fn(variables, batch)
        sums = batch_sums if sums is None else jax.tree_util.tree_map(jnp.add, sums, batch_sums)
        mask = np.asarray(jax.device_get(_replicated_value(batch["mask"])))
        labels.append(np.asarray(jax.device_get(_replicated_value(batch["label"])))[mask])
        outputs.append(np.asarray(batch_outputs)[mask])
    sums = jax.device_get(sums)
    values = {**metrics.means(sums), "count": int(sums["count"])}
    labels, outputs = np.concatenate(labels), np.concatenate(outputs)
    return task.summarize(values, labels, outputs), labels, outputs


def _replicated_value(array):
    """A global (sharded) batch array as a host numpy array, on every process."""
    if jax.process_count() == 1:
        return array
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(array, tiled=True)


def record(workdir: str, name: str, task: tasks.Task, labels, outputs, values: dict,
           class_names, header: str) -> str:
    """Writes the task's report, WORKDIR/report{name}.txt, and where it has one the confusion
    matrix, plots/confusion_matrix{name}.png (name: '' for the training run's own evaluation,
    '_SPLIT' for the evaluate command's); returns the report's path."""
    report = os.path.join(workdir, f"report{name}.txt")
    matrix = task.write_report(report, labels, outputs, values, class_names, header)
    if matrix is None:
        return report
    os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
    plots.confusion_matrix(matrix, class_names,
                           os.path.join(workdir, "plots", f"confusion_matrix{name}.png"),
                           f"{header}\ntop-1 {values['top1']:.4f}")
    return report


def plot_curves(workdir: str, title: str) -> None:
    os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
    plots.training_curves(history.read_rows(os.path.join(workdir, "metrics.jsonl")),
                          os.path.join(workdir, "plots", "training_curves.png"), title)


def _split_name(info, split: str | None) -> str:
    # (a folder's name, or a CSV's without its extension: report_val.txt, not val.csv.txt)
    name = split or os.path.splitext(os.path.basename(os.path.normpath(info.eval_from)))[0]
    name = name or "eval"
    return name if "held out" not in info.eval_from else "holdout"


def _weights_from_config(plan, info) -> tuple:
    """(model, variables) for the plan's model with every tensor loaded from init_from."""
    from resnet_jax.runs import warm_start

    model = plan.model.create(info.num_classes, info.image_shape[-1])
    variables, summary_line = warm_start.initialised_from(model, info.image_shape,
                                                          plan.loop.init_from, plan.model.name,
                                                          complete=True)
    print(summary_line, flush=True)
    return model, variables


def evaluate_weights(*, workdir: str | None = None, config=None, data_dir: str | None = None,
                     split: str | None = None, report: str | None = None, which: str = "auto",
                     batch_size: int | None = None, out=None) -> dict:
    """What `evaluate.py` does: WORKDIR's checkpoint `which` (on its recorded config), or the
    weights `config.init_from` names, evaluated on every example of the split once. A run gets
    WORKDIR/report_SPLIT.txt and its figure; weights get `report` if given. Returns the values,
    with the step (and checkpoint) evaluated. The lines it prints go to `out` (stdout)."""
    from resnet_jax import environment
    from resnet_jax import plan as plans
    from resnet_jax.data import datasets
    from resnet_jax.errors import UserError
    from resnet_jax.runs import inference
    from resnet_jax.train import steps

    out = out or sys.stdout
    if workdir:
        run = inference.from_workdir(workdir, which=which)
        config = run.plan.config.as_configdict()
    elif not config.init_from:
        raise UserError("--config without --workdir evaluates the weights that "
                        "--config.init_from names; set it")
    if data_dir is not None:
        config.data_dir = data_dir
    if split is not None:
        config.eval_split = split
    if batch_size is not None:
        config.eval_batch_size = batch_size
    plan = plans.resolve(config)
    source = datasets.create_source(plan.data)
    info = source.info
    mesh = sharding.create_mesh()
    environment.announce(plan.model.kernels, plan.model.dtype, file=out)
    if workdir:
        if tuple(info.class_names) != tuple(run.class_names):
            raise UserError(f"the data's classes ({', '.join(info.class_names[:8])}...) are "
                            f"not the run's ({', '.join(run.class_names[:8])}...)")
        model, variables = run.model, run.variables
        what = f"{workdir} at step {run.step} ({run.checkpoint} checkpoint)"
    else:
        (model, variables), what = _weights_from_config(plan, info), plan.loop.init_from
    variables = jax.device_put(kernels.for_inference(model, variables, info.eval_shape),
                               sharding.replicated(mesh))
    eval_fn, _ = steps.compile_eval_step(
        model.apply, variables, mesh,
        (plan.loop.eval_batch_size // jax.process_count(), *info.eval_shape), plan.task,
        info.pixel_normalization)
    values, labels, outputs = evaluate(eval_fn, variables, source, plan.loop.eval_batch_size,
                                       mesh, sys.stderr.isatty(), plan.task)
    header = f"{what}: {plan.model.name} on {info.name}, evaluated on {info.eval_from}"
    examples = "training examples" if plan.data.eval_split == "train" else "held-out examples"
    print(f"{header}\n{plan.task.summary(values, examples)}", file=out, flush=True)
    if jax.process_index() == 0 and workdir:
        path = record(workdir, f"_{_split_name(info, split)}", plan.task, labels, outputs,
                      values, info.class_names, header)
        print(f"report: {path}", file=out, flush=True)
    elif jax.process_index() == 0 and report:
        plan.task.write_report(report, labels, outputs, values, info.class_names, header)
        print(f"report: {report}", file=out, flush=True)
    if workdir:
        values = {"step": run.step, "checkpoint": run.checkpoint, **values}
    return values
