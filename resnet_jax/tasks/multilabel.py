"""Any number of labels per image: a sigmoid per class, the binary cross entropy averaged over
the classes (torch's BCEWithLogitsLoss), mAP, and a label predicted where its probability is at
least `threshold`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from resnet_jax.files import write_atomically
from resnet_jax.tasks.classification import TOP_K, top_k_hits


@dataclasses.dataclass(frozen=True)
class MultiLabel:
    threshold: float = 0.5

    best_metric = "eval_map"  # what the best checkpoint keeps by default
    name = "multilabel"

    # --- on the device ------------------------------------------------------------------------

    def label_spec(self, num_classes: int) -> tuple[tuple[int, ...], str]:
        return (num_classes,), "float32"  # a multi-hot row per image

    def targets(self, labels, num_classes: int):
        return labels  # already (B, classes) rows

    def for_data(self, class_counts) -> MultiLabel:
        return self  # no class weights (refused by the plan's checks)

    def loss(self, logits, labels):
        return optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels).mean()

    def sums(self, logits, targets, mask=None) -> dict:
        """The loss (as `loss`, per image), and top1 / top5: images whose highest-scoring
        class is one of their labels, or with a label among the 5 highest."""
        if mask is None:
            mask = jnp.ones(targets.shape[:1], bool)
        logits = logits.astype(jnp.float32)
        weights = mask.astype(jnp.float32)
        loss = optax.sigmoid_binary_cross_entropy(logits, targets).mean(axis=-1)
        top_k = jax.lax.top_k(logits, min(TOP_K, logits.shape[-1]))[1]  # (B, k)
        hits = top_k_hits(logits, jnp.take_along_axis(targets, top_k, axis=-1) > 0)
        return {"loss": jnp.sum(loss * weights),
                **{name: jnp.sum(hit * weights) for name, hit in hits.items()},
                "count": jnp.sum(weights)}

    def outputs(self, logits):
        """Each class's probability."""
        return jax.nn.sigmoid(logits.astype(jnp.float32))

    # --- on the host --------------------------------------------------------------------------

    def summarize(self, values: dict, labels: np.ndarray, outputs: np.ndarray) -> dict:
        return {**values, "map": mean_average_precision(labels, outputs)[0]}

    def summary(self, values: dict, examples: str = "held-out examples") -> str:
        top5 = f"top-5 {values['top5']:.4f}, " if "top5" in values else ""
        return (f"mAP {values['map']:.4f}, top-1 {values['top1']:.4f}, {top5}loss "
                f"{values['loss']:.4f} on {values['count']} {examples}")

    def write_report(self, path: str, labels: np.ndarray, outputs: np.ndarray, values: dict,
                     class_names: Sequence[str], header: str) -> None:
        """mAP and each class's AP, then the thresholded precision/recall/F1 table; no
        confusion matrix (returns None)."""
        write_report(path, labels, outputs, self.threshold, class_names, header)

    def predict(self, logits: np.ndarray, class_names: Sequence[str], top_k: int,
                threshold: float | None = None) -> list[dict]:
        """Per image: {"labels": [...]}, every class whose sigmoid is >= `threshold` (the
        run's by default), most likely first."""
        threshold = self.threshold if threshold is None else threshold
        probabilities = 1 / (1 + np.exp(-logits))
        return [{"labels": [{"class": class_names[i], "probability": float(p[i])}
                            for i in np.argsort(-p, kind="stable") if p[i] >= threshold]}
                for p in probabilities]

    def output_record(self) -> dict:
        return {"task": self.name, "output": "sigmoid per class", "threshold": self.threshold}


def mean_average_precision(targets: np.ndarray, probabilities: np.ndarray) -> tuple:
    """(macro average precision over the classes with a positive example, per-class AP with
    nan for a class without one): scikit-learn's `average_precision_score`."""
    from sklearn.metrics import average_precision_score

    per_class = np.full(targets.shape[1], np.nan)
    for c in range(targets.shape[1]):
        if targets[:, c].any():
            per_class[c] = average_precision_score(targets[:, c], probabilities[:, c])
    return float(np.nanmean(per_class)), per_class


def write_report(path: str, targets: np.ndarray, probabilities: np.ndarray, threshold: float,
                 class_names: Sequence[str], header: str) -> dict:
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
