"""Metrics: on-device sums per step, host-side writers (JSON lines, TensorBoard), the report."""

from __future__ import annotations

import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax.data.lazy_tf import tf


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


def means(sums: dict) -> dict:
    """Host floats: loss, top1, top5 averaged over the examples counted."""
    count = float(sums["count"])
    return {k: float(v) / count for k, v in sums.items() if k != "count"}


class MetricWriter:
    """One JSON object per line in WORKDIR/metrics.jsonl, and TensorBoard scalars in WORKDIR.

    Only process 0 writes; other processes get a writer that does nothing.
    """

    def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._summary = None
        if enabled and tensorboard:
            self._summary = tf.summary.create_file_writer(workdir)

    def truncate_after(self, step: int) -> None:
        """On resume: drop lines of steps after the checkpoint, which will be written again."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, self.path)

    def write(self, step: int, split: str, values: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
        if self._summary is not None:
            with self._summary.as_default():
                for key, value in values.items():
                    tf.summary.scalar(f"{split}/{key}", value, step=int(step))
            self._summary.flush()


def write_report(path: str, labels: np.ndarray, predictions: np.ndarray, top5: float,
                 class_names: Sequence[str], header: str) -> str:
    """Top-1/top-5 and scikit-learn's per-class precision/recall/F1 table, to `path`."""
    from sklearn.metrics import classification_report

    top1 = float(np.mean(labels == predictions))
    table = classification_report(labels, predictions, labels=list(range(len(class_names))),
                                  target_names=list(class_names), digits=4, zero_division=0)
    text = (f"{header}\n\ntop-1 accuracy: {top1:.4f}\ntop-5 accuracy: {top5:.4f}\n"
            f"examples: {len(labels)}\n\n{table}")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return text
