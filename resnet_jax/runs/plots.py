"""Figures of a run in WORKDIR/plots (PNG, matplotlib without a display): training curves from
metrics.jsonl and the confusion matrix of an evaluation."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

# Beyond this many classes the confusion matrix is drawn without tick labels.
_LABELLED_CLASSES = 40


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # headless: no display on servers and schedulers
    import matplotlib.pyplot as plt
    return plt


def save(figure, path: str) -> None:
    root, extension = os.path.splitext(path)
    tmp = f"{root}.tmp{extension}"  # the extension names the format
    figure.savefig(tmp, dpi=100, bbox_inches="tight")
    os.replace(tmp, path)


def training_curves(rows: Sequence[dict], path: str, title: str) -> None:
    """Loss, top-1 and learning rate against step; training rows as lines, evals as dots."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for split, style in (("train", dict(linewidth=1.2)), ("eval", dict(marker="o",
                                                                      linewidth=2))):
        chosen = [r for r in rows if r["split"] == split]
        if not chosen:
            continue
        steps = [r["step"] for r in chosen]
        axes[0].plot(steps, [r["loss"] for r in chosen], label=split, **style)
        axes[1].plot(steps, [r["top1"] for r in chosen], label=split, **style)
        if split == "train":
            axes[2].plot(steps, [r["learning_rate"] for r in chosen], **style)
    for axis, name in zip(axes, ("loss", "top-1 accuracy", "learning rate")):
        axis.set_xlabel("step")
        axis.set_title(name)
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.suptitle(title, y=1.03)
    save(figure, path)
    plt.close(figure)


def confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str,
                     title: str) -> None:
    """Rows: true class; columns: predicted class; counts in the cells of small matrices."""
    plt = pyplot()
    n = len(class_names)
    size = min(4 + 0.45 * n, 16)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    if n <= _LABELLED_CLASSES:
        axis.set_xticks(range(n), class_names, rotation=90)
        axis.set_yticks(range(n), class_names)
        threshold = matrix.max() / 2 if matrix.size else 0
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                axis.text(j, i, str(count), ha="center", va="center", fontsize=8,
                          color="white" if count > threshold else "black")
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    save(figure, path)
    plt.close(figure)
