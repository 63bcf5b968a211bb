"""Metrics: on-device sums per step, host-side writers (JSON lines, TensorBoard), the report."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax.data.lazy_tf import tf
from resnet_jax.errors import StorageError
from resnet_jax.files import write_atomically


def classification_sums(logits, labels, mask=None) -> dict:
    """Per-batch sums (not means), so batches of any mask add up exactly: loss, top1, top5, n."""
    if mask is None:
        mask = jnp.ones(labels.shape, bool)
    logits = logits.astype(jnp.float32)
    weights = mask.astype(jnp.float32)
    loss = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
    k = min(5, logits.shape[-1])
    top_k = jax.lax.top_k(logits, k)[1]  # (B, k)
    hits = top_k == labels[:, None]
    return {"loss": jnp.sum(loss * weights), "top1": jnp.sum(hits[:, 0] * weights),
            "top5": jnp.sum(jnp.any(hits, axis=-1) * weights), "count": jnp.sum(weights)}


def multilabel_sums(logits, targets, mask=None) -> dict:
    """`classification_sums` of a multi-label task (targets: (B, classes) multi-hot rows): the
    loss is the binary cross-entropy of each class's sigmoid, averaged over the classes
    (torch's BCEWithLogitsLoss); top1 counts images whose highest-scoring class is one of
    their labels, top5 those with a label among the 5 highest."""
    import optax

    if mask is None:
        mask = jnp.ones(targets.shape[:1], bool)
    logits = logits.astype(jnp.float32)
    weights = mask.astype(jnp.float32)
    loss = optax.sigmoid_binary_cross_entropy(logits, targets).mean(axis=-1)
    k = min(5, logits.shape[-1])
    top_k = jax.lax.top_k(logits, k)[1]  # (B, k)
    hits = jnp.take_along_axis(targets, top_k, axis=-1) > 0
    return {"loss": jnp.sum(loss * weights), "top1": jnp.sum(hits[:, 0] * weights),
            "top5": jnp.sum(jnp.any(hits, axis=-1) * weights), "count": jnp.sum(weights)}


def mean_average_precision(targets: np.ndarray, probabilities: np.ndarray) -> tuple:
    """(macro average precision over the classes with a positive example, per-class AP with
    nan for a class without one): scikit-learn's `average_precision_score`."""
    from sklearn.metrics import average_precision_score

    per_class = np.full(targets.shape[1], np.nan)
    for c in range(targets.shape[1]):
        if targets[:, c].any():
            per_class[c] = average_precision_score(targets[:, c], probabilities[:, c])
    return float(np.nanmean(per_class)), per_class


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
    """Host floats: loss, top1, top5 averaged over the examples counted."""
    count = float(sums["count"])
    return {k: float(sums[k]) / count for k in ("loss", "top1", "top5")}


def read_rows(path: str) -> list[dict]:
    """metrics.jsonl's rows. A torn last line (a crash while it was written) is dropped with a
    warning; any other unreadable line is a StorageError naming the file and line."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if any(rest.strip() for rest in lines[number:]):
                raise StorageError(f"{path}, line {number}, is not a JSON object; fix or "
                                   f"remove that line") from None
            print(f"warning: {path}: dropped an incomplete last line (written when a run "
                  f"stopped); its step is written again", file=sys.stderr, flush=True)
    return rows


class MetricWriter:
    """One JSON object per line in WORKDIR/metrics.jsonl, and TensorBoard scalars in WORKDIR.

    metrics.jsonl is the record; TensorBoard's event files are rewritten from it when a run
    resumes, so that both show each step once. Only process 0 writes; other processes get a
    writer that does nothing.
    """

    def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.workdir = workdir
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.rows: list[dict] = []  # what metrics.jsonl holds; each checkpoint saves a copy
        self._tensorboard = tensorboard
        self._summary = None

    def resume_at(self, step: int, saved_rows: list | None = None) -> None:
        """Keeps the rows of steps up to `step` (the checkpoint the run resumes from; they will
        be written again after it) and rewrites TensorBoard's events to match. `saved_rows`: the
        checkpoint's copy, which replaces a metrics.jsonl that lost rows (deleted, cut)."""
        if not self.enabled:
            return
        kept = [row for row in read_rows(self.path) if row["step"] <= step]
        if saved_rows is not None and len(saved_rows) > len(kept):
            print(f"warning: {self.path} lacked {len(saved_rows) - len(kept)} of the "
                  f"{len(saved_rows)} rows up to step {step} (deleted or cut?); rebuilt them "
                  f"from checkpoint {step}", file=sys.stderr, flush=True)
            kept = [dict(row) for row in saved_rows]
        elif saved_rows is None and step and not kept:
            print(f"warning: {self.path} holds no rows up to step {step}, and checkpoint "
                  f"{step} (written by an older version) no copy of them: those rows are "
                  f"lost; training continues from step {step}", file=sys.stderr, flush=True)
        self.rows = kept
        write_atomically(self.path, "".join(json.dumps(row) + "\n" for row in kept))
        if self._tensorboard:
            for name in os.listdir(self.workdir):
                if name.startswith("events.out.tfevents."):
                    os.remove(os.path.join(self.workdir, name))
            self._summary = tf.summary.create_file_writer(self.workdir)
            for row in kept:
                self._scalars(row["step"], row["split"], row)
            self._summary.flush()

    def write(self, step: int, split: str, values: dict) -> None:
        if not self.enabled:
            return
        line = json.dumps({"step": int(step), "split": split, **values})
        with open(self.path, "a") as f:
            f.write(line + "\n")
        self.rows.append(json.loads(line))  # as read back: plain JSON values
        if self._summary is not None:
            self._scalars(step, split, values)
            self._summary.flush()

    def _scalars(self, step: int, split: str, values: dict) -> None:
        with self._summary.as_default():
            for key, value in values.items():
                if key not in ("step", "split"):
                    tf.summary.scalar(f"{split}/{key}", value, step=int(step))


def final_eval(workdir: str, step: int) -> dict | None:
    """The eval row a finished run wrote at its last `step`, if there is one."""
    rows = read_rows(os.path.join(workdir, "metrics.jsonl"))
    finals = [row for row in rows if row["step"] == step and row["split"] == "eval"]
    return finals[-1] if finals else None


def write_report(path: str, labels: np.ndarray, predictions: np.ndarray, top5: float,
                 class_names: Sequence[str], header: str) -> np.ndarray:
    """Top-1/top-5, scikit-learn's per-class precision/recall/F1 table and the confusion matrix
    (rows: true class, columns: predicted), to `path`; returns the matrix."""
    from sklearn.metrics import classification_report, confusion_matrix

    classes = list(range(len(class_names)))
    top1 = float(np.mean(labels == predictions))
    table = classification_report(labels, predictions, labels=classes,
                                  target_names=list(class_names), digits=4, zero_division=0)
    matrix = confusion_matrix(labels, predictions, labels=classes)
    text = (f"{header}\n\ntop-1 accuracy: {top1:.4f}\ntop-5 accuracy: {top5:.4f}\n"
            f"examples: {len(labels)}\n\n{table}\n{_confusion_text(matrix, class_names)}")
    write_atomically(path, text)
    return matrix


def write_multilabel_report(path: str, targets: np.ndarray, probabilities: np.ndarray,
                            threshold: float, class_names: Sequence[str], header: str) -> dict:
    """mAP and each class's average precision, then scikit-learn's precision/recall/F1 table
    with a label predicted where its probability is >= `threshold`, to `path`; returns
    {"map", "micro_f1"}."""
    from sklearn.metrics import classification_report, f1_score

    mean_ap, per_class = mean_average_precision(targets, probabilities)
    predicted = (probabilities >= threshold).astype(int)
    table = classification_report(targets.astype(int), predicted, target_names=list(class_names),
                                  digits=4, zero_division=0)
    micro_f1 = float(f1_score(targets.astype(int), predicted, average="micro", zero_division=0))
    width = max(len(name) for name in class_names)
    aps = "\n".join(f"{name:<{width}}  {ap:.4f}" if ap == ap else f"{name:<{width}}  (no "
                    f"positive example)" for name, ap in zip(class_names, per_class))
    text = (f"{header}\n\nmean average precision (mAP, macro): {mean_ap:.4f}\n"
            f"micro-F1 at threshold {threshold}: {micro_f1:.4f}\nexamples: {len(targets)}\n\n"
            f"average precision per class\n{aps}\n\nat threshold {threshold} (a label is "
            f"predicted where its probability >= {threshold}):\n{table}")
    write_atomically(path, text)
    return {"map": mean_ap, "micro_f1": micro_f1}


_CONFUSION_TEXT_CLASSES = 40


def _confusion_text(matrix: np.ndarray, class_names: Sequence[str]) -> str:
    n = len(class_names)
    if n > _CONFUSION_TEXT_CLASSES:
        return (f"confusion matrix: {n} classes, too many to print; see "
                f"plots/confusion_matrix*.png\n")
    # Columns are numbered; rows name their class and its number.
    width = max(len(str(int(matrix.max()))) if matrix.size else 1, len(str(n - 1)))
    name_width = max(len(name) for name in class_names) + len(str(n - 1)) + 3
    lines = ["confusion matrix (rows: true class, columns: predicted class number)",
             " " * name_width + " ".join(f"{j:>{width}}" for j in range(n))]
    for i, name in enumerate(class_names):
        label = f"{i}: {name}"
        lines.append(f"{label:<{name_width}}" + " ".join(f"{int(c):>{width}}"
                                                         for c in matrix[i]))
    return "\n".join(lines) + "\n"
