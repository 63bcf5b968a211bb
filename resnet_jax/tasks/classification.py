"""One class per image: a softmax over the classes, cross entropy (with torch's label
smoothing), top-1/top-5, scikit-learn's per-class precision/recall/F1 and the confusion matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from resnet_jax.files import write_atomically


@dataclasses.dataclass(frozen=True)
class Classification:
    label_smoothing: float = 0.0

    best_metric = "eval_top1"  # what the best checkpoint keeps by default
    name = "classification"

    # --- on the device ------------------------------------------------------------------------

    def label_spec(self, num_classes: int) -> tuple[tuple[int, ...], str]:
        return (), "int32"  # a class index per image

    def targets(self, labels, num_classes: int):
        """(B,) class indices -> (B, classes) one-hot rows (mixup and cutmix blend them)."""
        return jax.nn.one_hot(labels, num_classes)

    def loss(self, logits, labels):
        """Mean cross entropy against class indices (B,) or soft targets (B, classes) (from
        mixup/cutmix), smoothed as torch's `label_smoothing` smooths either."""
        return cross_entropy(logits, labels, logits.shape[-1], self.label_smoothing)

    def sums(self, logits, labels, mask=None) -> dict:
        """Sums over a batch (not means), so batches of any mask add up exactly: loss (the
        unsmoothed cross entropy), top1, top5, count. Soft targets count against their argmax,
        as torchvision's reference counts them."""
        if labels.ndim == 2:
            labels = jnp.argmax(labels, axis=-1)
        return classification_sums(logits, labels, mask)

    def outputs(self, logits):
        """The predicted class of each example."""
        return jnp.argmax(logits, axis=-1)

    # --- on the host --------------------------------------------------------------------------

    def summarize(self, values: dict, labels: np.ndarray, outputs: np.ndarray) -> dict:
        return values

    def summary(self, values: dict, examples: str = "held-out examples") -> str:
        return (f"top-1 {values['top1']:.4f}, top-5 {values['top5']:.4f}, loss "
                f"{values['loss']:.4f} on {values['count']} {examples}")

    def write_report(self, path: str, labels: np.ndarray, outputs: np.ndarray, values: dict,
                     class_names: Sequence[str], header: str) -> np.ndarray:
        """Top-1/top-5, scikit-learn's per-class table and the confusion matrix (rows: true
        class, columns: predicted), to `path`; returns the matrix."""
        return write_report(path, labels, outputs, values["top5"], class_names, header)

    def predict(self, logits: np.ndarray, class_names: Sequence[str], top_k: int,
                threshold: float | None = None) -> list[dict]:
        """Per image: {"top_k": [{"class", "probability"}...]}, the k most likely (a softmax)."""
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        k = min(top_k, len(class_names))
        return [{"top_k": [{"class": class_names[i], "probability": float(p[i])}
                           for i in np.argsort(-p, kind="stable")[:k]]} for p in probabilities]

    def output_record(self) -> dict:
        return {"task": self.name, "output": "softmax over the classes"}


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0):
    """Mean cross entropy against integer `labels` (B,) or soft targets (B, num_classes)."""
    targets = labels if labels.ndim == 2 else jax.nn.one_hot(labels, num_classes)
    targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()


def classification_sums(logits, labels, mask=None) -> dict:
    """Per-batch sums of class indices `labels` (B,): loss, top1, top5, count."""
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


def write_report(path: str, labels: np.ndarray, predictions: np.ndarray, top5: float,
                 class_names: Sequence[str], header: str) -> np.ndarray:
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
