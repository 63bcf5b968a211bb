"""A finished (or running) run's model for inference: its recorded config, class names and the
weights of its latest checkpoint, without the training data. Used by evaluate, predict, embed
and export (`export_run`: the interop exporters plus the sidecar record)."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import environment, models
from resnet_jax.data import datasets, preprocessing
from resnet_jax.errors import UserError
from resnet_jax.files import write_atomically
from resnet_jax.train import checkpoint, records, steps
from resnet_jax.train.config import model_from_config


@dataclasses.dataclass
class RunModel:
    config: object
    class_names: tuple[str, ...]
    model: models.ResNet
    variables: dict  # {"params": ..., "batch_stats": ...}, host arrays
    step: int | None  # the checkpoint's step; None for weights from a file

    @property
    def multilabel(self) -> bool:
        """Several labels per image: a sigmoid per class, labels from a threshold."""
        return self.config.dataset == "multilabel"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        in_channels = self.variables["params"]["conv1"]["kernel"].shape[2]
        size = datasets.eval_crop_size(self.config)  # what the run was evaluated on
        return (size, size, in_channels)


def from_workdir(workdir: str, kernels: str | None = None) -> RunModel:
    """WORKDIR's model at its latest checkpoint. UserError if WORKDIR is not a run, or has no
    checkpoint yet."""
    config = records.load_config(workdir)
    if kernels is not None:
        config.kernels = kernels
    try:
        state = checkpoint.load_state(workdir)
    except FileNotFoundError:
        raise UserError(f"{workdir} has no checkpoint yet: train first (or wait for the "
                        f"first checkpoint)") from None
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    variables = jax.tree_util.tree_map(np.asarray, variables)
    num_classes = variables["params"]["fc"]["kernel"].shape[-1]
    class_names = records.read_class_names(workdir) or tuple(str(i) for i in range(num_classes))
    if len(class_names) != num_classes:
        raise UserError(f"{os.path.join(workdir, records.CLASSES_FILE)} names "
                        f"{len(class_names)} classes; the checkpoint has {num_classes}")
    in_channels = variables["params"]["conv1"]["kernel"].shape[2]
    model = model_from_config(config, num_classes, in_channels)
    return RunModel(config, class_names, model, variables, int(state["step"]))


def eval_preprocessing(config) -> dict:
    """How an image file becomes this run's input (for predict and the exports' JSON)."""
    if config.dataset not in datasets.FILE_DATASETS:
        raise UserError(f"runs on {config.dataset!r} take arrays, not image files: predict and "
                        f"the exports' preprocessing serve runs on "
                        f"{', '.join(datasets.FILE_DATASETS)}")
    return preprocessing.eval_preprocessing_spec(
        datasets.eval_crop_size(config), config.eval_resize, preprocessing.IMAGENET_MEAN,
        preprocessing.IMAGENET_STD)


def logits_fn(run: RunModel, normalization=None):
    """A jitted (images -> float32 logits) in eval mode. `normalization` (mean, std): the
    images are uint8 pixels, normalised as the training and eval steps do
    (`steps.normalize_images`)."""
    apply = jax.jit(lambda variables, images: run.model.apply(
        variables, steps.normalize_images(images, normalization), train=False)
        .astype(jnp.float32))
    return lambda images: np.asarray(apply(run.variables, images))


def predictions(run: RunModel, logits: np.ndarray, top_k: int, threshold: float | None):
    """Per image: {"top_k": [{"class", "probability"}...]} (a softmax, the k most likely), or
    for a multi-label run {"labels": [...]}, every class whose sigmoid is >= `threshold` (the
    run's by default), most likely first."""
    if run.multilabel:
        threshold = run.config.threshold if threshold is None else threshold
        probabilities = 1 / (1 + np.exp(-logits))
        return [{"labels": [{"class": run.class_names[i], "probability": float(p[i])}
                            for i in np.argsort(-p, kind="stable") if p[i] >= threshold]}
                for p in probabilities]
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    k = min(top_k, len(run.class_names))
    return [{"top_k": [{"class": run.class_names[i], "probability": float(p[i])}
                       for i in np.argsort(-p, kind="stable")[:k]]} for p in probabilities]


def task_record(run: RunModel) -> dict:
    """What the exports' JSON says of the outputs: how logits become predictions."""
    if run.multilabel:
        return {"task": "multilabel", "output": "sigmoid per class", "threshold":
                run.config.threshold}
    return {"task": "classification", "output": "softmax over the classes"}


EXPORT_FORMATS = ("jax", "onnx", "torchvision")
_EXPORT_EXTRAS = {"onnx": "export", "torchvision": "torch"}  # what a format needs beyond [train]


def export_run(workdir: str, fmt: str, output: str, overwrite: bool = False) -> dict:
    """WORKDIR's latest checkpoint written as `fmt` to OUTPUT, and OUTPUT.json beside it: the
    model, the class names, the input layout and the exact preprocessing. Nothing is overwritten
    unless `overwrite`; returns the record."""
    from resnet_jax.interop import export

    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}; valid: {', '.join(EXPORT_FORMATS)}")
    sidecar = output + ".json"
    existing = [p for p in (output, sidecar) if os.path.exists(p)]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} exists; choose another --output or pass --overwrite")
    if os.path.dirname(output) and not os.path.isdir(os.path.dirname(output)):
        raise UserError(f"the folder of --output, {os.path.dirname(output)}, does not exist")
    if fmt in _EXPORT_EXTRAS:
        environment.require_extra(_EXPORT_EXTRAS[fmt], f"--format {fmt}")
    run = from_workdir(workdir, kernels="xla")
    environment.announce("xla", run.config.dtype)
    try:
        preprocessing_spec = eval_preprocessing(run.config)
    except UserError:
        preprocessing_spec = None  # a run on arrays: the inputs are the dataset's own
    name = run.config.model
    if fmt == "jax":
        inputs = export.write_jax(run.model, run.variables, run.image_shape, output)
    elif fmt == "onnx":
        inputs = export.write_onnx(name, run.model, run.variables, run.image_shape, output)
    else:
        inputs = export.write_torchvision(name, run.variables, run.image_shape, output)
    record = {"format": fmt, "model": name, "workdir": os.path.abspath(workdir),
              "step": run.step, "classes": list(run.class_names), **task_record(run),
              "input": inputs,
              "preprocessing": preprocessing_spec or f"the {run.config.dataset} dataset's arrays"}
    write_atomically(sidecar, json.dumps(record, indent=2) + "\n")
    print(f"wrote {output} ({fmt}) and {sidecar} (classes and preprocessing)")
    return record
