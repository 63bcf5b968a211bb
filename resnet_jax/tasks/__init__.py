"""What a run learns to predict: a task is one object that the step, the loop, evaluation,
prediction and export ask, so that none of them branches on which task it is.

    task = tasks.for_dataset(dataset, label_smoothing=..., threshold=...)  # what the plan does

A task answers, on the device (inside the jitted steps, so its methods are pure JAX):
    label_spec(num_classes)        the shape after the batch axis and dtype of a batch's labels
    targets(labels, num_classes)   (B, classes) rows that mixup / cutmix can blend
    loss(logits, labels)           the mean loss the step minimises
    sums(logits, labels, mask)     per-batch metric sums ("loss", "top1", "top5", "count"),
                                   which add up exactly over batches of any mask
    outputs(logits)                what evaluation keeps per example for the report
and on the host:
    for_data(class_counts)               the task bound to the training set (class weights)
    summarize(values, labels, outputs)   the evaluation's values, with the task's own (mAP)
    summary(values, examples)            the one line a run prints after an evaluation
    write_report(path, ...)              the report file (and the confusion matrix, if any)
    predict(logits, class_names, top_k, threshold)   predict.py's / a service's answer per image
    output_record()                      what an export's sidecar says of the outputs

The two tasks are the examples: `Classification` (one class per image, a softmax, the
per-class precision/recall/F1 table and confusion matrix) and `MultiLabel` (any number of
labels per image, a sigmoid per class, mAP and the thresholded table). Adding a task (metric
learning, say) is one module here implementing these methods, one entry in `for_dataset`'s
choice, and its tests; a task object is a frozen dataclass, hashable, so the jitted steps take
it as a static argument.
"""

from __future__ import annotations

from resnet_jax.tasks.classification import Classification
from resnet_jax.tasks.multilabel import MultiLabel

Task = Classification | MultiLabel

# dataset -> the task its labels define (every other dataset: one class per image)
_TASK_OF_DATASET = {"multilabel": "multilabel"}
TASKS = ("classification", "multilabel")


def name_for_dataset(dataset: str) -> str:
    return _TASK_OF_DATASET.get(dataset, "classification")


def for_dataset(dataset: str, *, label_smoothing: float = 0.0, threshold: float = 0.5,
                balanced: bool = False) -> Task:
    """The task of a run on `dataset`, with its options (`for_data` then binds it to the
    training set: class weights)."""
    if name_for_dataset(dataset) == "multilabel":
        return MultiLabel(threshold)
    return Classification(label_smoothing, balanced)


__all__ = ["Classification", "MultiLabel", "TASKS", "Task", "for_dataset", "name_for_dataset"]
