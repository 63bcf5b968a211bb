"""A finished (or running) run's model for inference: its plan (from the recorded config),
class names, input contract and the weights of its latest checkpoint, without the training data.
Used by evaluate, predict, embed and export (`export_run`: the interop exporters plus the
sidecar record)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import environment, extras, models
from resnet_jax import plan as plans
from resnet_jax.errors import UserError
from resnet_jax.files import write_atomically
from resnet_jax.models import parts
from resnet_jax.models.inputs import normalize_images
from resnet_jax.runs import checkpoint, records
from resnet_jax.runs.contract import InputContract


@dataclasses.dataclass
class RunModel:
    plan: plans.Plan  # from the run's recorded config
    contract: InputContract
    model: models.ResNet
    variables: dict  # {"params": ..., "batch_stats": ...}, host arrays
    step: int | None  # the checkpoint's step; None for weights from a file
    checkpoint: str = "latest"  # which: "best", "latest" or "step"

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.contract.class_names

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.contract.image_shape


def use_compilation_cache(path: str, min_compile_s: float = 1.0) -> None:
    """JAX's persistent compilation cache in `path` ("" : none): a command run again reuses
    the computations that took `min_compile_s` or more to compile (training: the steps;
    inference commands: every one, as a second saved is most of their start)."""
    if path:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_s)


def from_workdir(workdir: str, kernels: str | None = None, which: str = "auto") -> RunModel:
    """WORKDIR's model at the checkpoint `which` names: "best", "latest", a step, or "auto" (the
    best where the run keeps one, else the latest); says which on stderr. UserError if WORKDIR
    is not a run, or has no such checkpoint."""
    config = records.load_config(workdir)
    if kernels is not None:
        config.kernels = kernels
    directory, step = checkpoint.resolve_step(workdir, which)
    state = checkpoint.load_state(workdir, step, directory,
                                  only=("params", "batch_stats", "step"))
    name = "best" if directory == checkpoint.BEST_DIR else "latest" if which in (
        "auto", "latest") else "step"
    print(f"{workdir}: the {name} checkpoint, step {step}", file=sys.stderr, flush=True)
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    variables = jax.tree_util.tree_map(np.asarray, variables)
    num_classes = parts.num_classes(variables["params"])
    class_names = (checkpoint.recorded_class_names(workdir, directory, step)
                   or records.read_class_names(workdir)
                   or tuple(str(i) for i in range(num_classes)))
    if len(class_names) != num_classes:
        raise UserError(f"{os.path.join(workdir, records.CLASSES_FILE)} names "
                        f"{len(class_names)} classes; the checkpoint has {num_classes}")
    plan = plans.build(config)
    use_compilation_cache(plan.loop.compilation_cache_dir, min_compile_s=0.0)
    in_channels = parts.in_channels(variables["params"])
    contract = InputContract.of(plan.data, plan.task, class_names, in_channels)
    return RunModel(plan, contract, plan.model.create(num_classes, in_channels), variables,
                    int(state["step"]), name)


def _write_int8(run: RunModel, name: str, output: str, calibration_images: int):
    """The float32 ONNX model beside OUTPUT for a moment, its int8 model at OUTPUT; (the input
    description, the quantisation record with both models' top-1 on the evaluation split)."""
    from resnet_jax.interop import export, quantize

    train_paths, eval_paths, labels = quantize.images_of(run)  # refusals before any work
    float_path = output + ".float32.partial"
    int8_path = output + ".int8.partial"
    try:
        inputs = export.write_onnx(name, run.model, run.variables, run.image_shape, float_path)
        used = quantize.quantize(run, float_path, int8_path, train_paths, calibration_images)
        result = quantize.compare(run, float_path, int8_path, eval_paths, labels)
        os.replace(int8_path, output)
    finally:
        for leftover in (float_path, int8_path):
            if os.path.exists(leftover):
                os.remove(leftover)
    drop = 100 * (result["top1_float32"] - result["top1_int8"])
    print(f"int8: top-1 {result['top1_int8']:.4f}, float32 {result['top1_float32']:.4f} on the "
          f"{result['eval_images']} evaluation images ({drop:+.2f} points lost); "
          f"{result['images_per_s_int8']:.1f} vs {result['images_per_s_float32']:.1f} images/s "
          f"here ({result['images_per_s_int8'] / result['images_per_s_float32']:.2f}x, "
          f"onnxruntime, batch {quantize.BATCH})", flush=True)
    return inputs, {"type": "int8", "method": quantize.METHOD, "calibration_images": used,
                    "calibration": "a fixed sample of the run's training images, read with its "
                                   "evaluation preprocessing", **result}


def from_config(config, kernels: str | None = None) -> RunModel:
    """The network `config.model` with every tensor of the weights `config.init_from` names (a
    torchvision state dict, .safetensors, a name such as torchvision:resnet50, or a workdir),
    with the config's evaluation preprocessing; the classes are the weights' output units,
    named by number. UserError if init_from is unset or does not fit the model."""
    from resnet_jax.runs import warm_start

    if not config.init_from:
        raise UserError("--config classifies with the weights that --config.init_from names; "
                        "set it (or give --workdir W, a run)")
    if kernels is not None:
        config.kernels = kernels
    plan = plans.resolve(config)
    use_compilation_cache(plan.loop.compilation_cache_dir, min_compile_s=0.0)
    located = warm_start.locate(plan.loop.init_from)  # a name is fetched (or found) once
    num_classes = warm_start.classifier_width(located.path)
    contract = InputContract.of(plan.data, plan.task, [str(i) for i in range(num_classes)])
    model = plan.model.create(num_classes, 3)
    variables, summary = warm_start.initialised_from(model, contract.image_shape, located,
                                                     plan.model.name, complete=True)
    print(summary, file=sys.stderr, flush=True)  # stdout may be the results
    return RunModel(plan, contract, model, variables, None, "weights")


def logits_fn(run: RunModel, normalization=None):
    """A jitted (images -> float32 logits) in eval mode. `normalization` (mean, std; the run's
    is `run.contract.normalization`): the images are uint8 pixels, normalised on the device as
    the training and eval steps do; None: the model's input as it is."""
    apply = jax.jit(lambda variables, images: run.model.apply(
        variables, normalize_images(images, normalization), train=False).astype(jnp.float32))
    variables = jax.device_put(models.kernels.for_inference(  # once, not at every call
        run.model, run.variables, run.image_shape))
    return lambda images: np.asarray(apply(variables, images))


EXPORT_FORMATS = ("jax", "onnx", "torchvision")
_EXPORT_EXTRAS = {"onnx": "export", "torchvision": "torch"}  # what a format needs beyond [train]


def export_run(workdir: str | None, fmt: str, output: str, overwrite: bool = False,
               which: str = "auto", config=None, platforms=None, quantize: str = "",
               calibration_images: int = 300) -> dict:
    """WORKDIR's checkpoint `which` (or, with `config` instead, the weights its init_from
    names) written as `fmt` to OUTPUT, and OUTPUT.json beside it: the model, the class names,
    the input layout and the exact preprocessing. `platforms` (jax only): those it is lowered
    for (default: every one). `quantize="int8"` (onnx, a run on image folders): the int8 model
    (`interop.quantize`), calibrated on `calibration_images` of the run's training images and
    checked against the float model on its evaluation split. Nothing is overwritten unless
    `overwrite`; returns the record."""
    from resnet_jax.interop import export

    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}; valid: {', '.join(EXPORT_FORMATS)}")
    if quantize not in ("", "int8"):
        raise UserError(f"--quantize must be int8 (or left out), got {quantize!r}")
    if quantize and (fmt != "onnx" or workdir is None):
        raise UserError("--quantize int8 makes an ONNX model from a run: give --format onnx "
                        "and --workdir W (its training images calibrate it)")
    if quantize and calibration_images < 1:
        raise UserError(f"--calibration_images must be >= 1, got {calibration_images}")
    sidecar = output + ".json"
    existing = [p for p in (output, sidecar) if os.path.exists(p)]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} exists; choose another --output or pass --overwrite")
    if os.path.dirname(output) and not os.path.isdir(os.path.dirname(output)):
        raise UserError(f"the folder of --output, {os.path.dirname(output)}, does not exist")
    if fmt in _EXPORT_EXTRAS:
        extras.require_extra(_EXPORT_EXTRAS[fmt], f"--format {fmt}")
    run = (from_config(config, kernels="xla") if workdir is None
           else from_workdir(workdir, kernels="xla", which=which))
    environment.announce("xla", run.plan.model.dtype)
    name = run.plan.model.name
    if fmt == "jax":
        inputs = export.write_jax(run.model, run.variables, run.image_shape, output,
                                  platforms or export.JAX_PLATFORMS)
    elif fmt == "onnx" and quantize:
        inputs, quantized = _write_int8(run, name, output, calibration_images)
    elif fmt == "onnx":
        inputs = export.write_onnx(name, run.model, run.variables, run.image_shape, output)
    else:
        inputs = export.write_torchvision(name, run.variables, run.image_shape, output)
    source = ({"workdir": os.path.abspath(workdir)} if workdir is not None
              else {"init_from": run.plan.loop.init_from})
    record = {"format": fmt, "model": name, **source,
              "step": run.step, "checkpoint": run.checkpoint, "classes": list(run.class_names),
              **run.contract.task.output_record(), "input": inputs,
              "preprocessing": run.contract.preprocessing_record()}
    if quantize:
        record["quantization"] = quantized
    write_atomically(sidecar, json.dumps(record, indent=2) + "\n")
    print(f"wrote {output} ({fmt}) and {sidecar} (classes and preprocessing)")
    return record
