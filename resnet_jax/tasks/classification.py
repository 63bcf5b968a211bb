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

from resnet_jax.errors import UserError
from resnet_jax.files import write_atomically


@dataclasses.dataclass(frozen=True)
class Classification:
    label_smoothing: float = 0.0
    balanced: bool = False  # class_weights=balanced: weights from the training set's counts
    weights: tuple[float, ...] | None = None  # per class, in the training loss (torch's weight)

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
        mixup/cutmix), smoothed as torch's `label_smoothing` smooths either, each class
        weighted as torch's `weight` weights it where `weights` are set."""
        return cross_entropy(logits, labels, logits.shape[-1], self.label_smoothing,
                             self.weights)

    def for_data(self, class_counts) -> Classification:
        """With class_weights=balanced, the task weighted by the training set's class counts:
        scikit-learn's "balanced", n_images / (n_classes * count of the class)."""
        if not self.balanced:
            return self
        if class_counts is None:
            raise UserError("class_weights=balanced weights classes by their training images, "
                            "and this dataset does not count them (image folders, digits and "
                            "CIFAR do): set class_weights=''")
        counts = np.asarray(class_counts, np.float64)
        weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
        return dataclasses.replace(self, weights=tuple(float(w) for w in weights))

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
        return (f"top-1 {values['top1']:.4f}, {_top5(values)}loss {values['loss']:.4f} on "
                f"{values['count']} {examples}")

    def write_report(self, path: str, labels: np.ndarray, outputs: np.ndarray, values: dict,
                     class_names: Sequence[str], header: str) -> np.ndarray:
        """Top-1/top-5, scikit-learn's per-class table and the confusion matrix (rows: true
        class, columns: predicted), to `path`; returns the matrix."""
        return write_report(path, labels, outputs, values.get("top5"), class_names, header)

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


TOP_K = 5  # top-5 is counted only for more classes than this (else it is always 1)


def _top5(values: dict) -> str:
    return f"top-5 {values['top5']:.4f}, " if "top5" in values else ""


def top_k_hits(logits, hits_of_top) -> dict:
    """{"top1", "top5"} hit indicators (B,) from the top-5 classes' hits (`hits_of_top`: the
    (B, k) hits of the k best classes); no top5 for TOP_K classes or fewer."""
    found = {"top1": hits_of_top[:, 0]}
    if logits.shape[-1] > TOP_K:
        found["top5"] = jnp.any(hits_of_top, axis=-1)
    return found


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0,
                  weights=None):
    """Mean cross entropy against integer `labels` (B,) or soft targets (B, num_classes), as
    torch's `cross_entropy`: with class `weights`, class-index targets average over the
    weights of their classes (smoothing included), soft targets over the batch."""
    if weights is None:
        targets = labels if labels.ndim == 2 else jax.nn.one_hot(labels, num_classes)
        targets = optax.smooth_labels(targets, label_smoothing)
        return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
    weights = jnp.asarray(weights, jnp.float32)
    if labels.ndim == 2:
        targets = optax.smooth_labels(labels, label_smoothing)
        return -(weights * targets * log_p).sum(-1).mean()
    weight_of = weights[labels]  # (B,)
    nll = -jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
    smooth = -(log_p * weights).sum(-1)  # (B,)
    return ((1 - label_smoothing) * (weight_of * nll).sum()
            + label_smoothing / num_classes * smooth.sum()) / weight_of.sum()


def classification_sums(logits, labels, mask=None) -> dict:
    """Per-batch sums of class indices `labels` (B,): loss, top1, top5, count."""
    if mask is None:
        mask = jnp.ones(labels.shape, bool)
    logits = logits.astype(jnp.float32)
    weights = mask.astype(jnp.float32)
    loss = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
    top_k = jax.lax.top_k(logits, min(TOP_K, logits.shape[-1]))[1]  # (B, k)
    hits = top_k_hits(logits, top_k == labels[:, None])
    return {"loss": jnp.sum(loss * weights),
            **{name: jnp.sum(hit * weights) for name, hit in hits.items()},
            "count": jnp.sum(weights)}


def write_report(path: str, labels: np.ndarray, predictions: np.ndarray, top5: float | None,
                 class_names: Sequence[str], header: str) -> np.ndarray:
    from sklearn.metrics import classification_report, confusion_matrix

    classes = list(range(len(class_names)))
    top1 = float(np.mean(labels == predictions))
    table = classification_report(labels, predictions, labels=classes,
                                  target_names=list(class_names), digits=4, zero_division=0)
    matrix = confusion_matrix(labels, predictions, labels=classes)
    top5_line = "" if top5 is None else f"top-5 accuracy: {top5:.4f}\n"
    text = (f"{header}\n\ntop-1 accuracy: {top1:.4f}\n{top5_line}"
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
