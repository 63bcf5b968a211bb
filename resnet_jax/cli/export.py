"""Exports a run's latest checkpoint for serving.

    python export.py --workdir W --format jax|onnx|torchvision --output PATH

- jax: a serialized `jax.export` artifact (StableHLO; any batch size), float32 NHWC input;
  load with `jax.export.deserialize(open(PATH, "rb").read()).call(images)`.
- onnx: an ONNX model (input "images", float32 NCHW, any batch size; output "logits"),
  checked with onnxruntime against this project's logits before it is kept.
- torchvision: a state dict that `torchvision.models.<model>(num_classes=N)` loads with
  `strict=True` (CIFAR-family models: `resnet_jax.interop.torch_models.create_torch_model`).

Beside PATH, PATH.json records the model, the class names, the input layout and the exact
preprocessing (decode to RGB, resize, center crop, mean, std). Nothing is overwritten unless
--overwrite; files are written whole or not at all.
"""

import io
import json
import os

from absl import flags

from resnet_jax.cli import flags as cli
from resnet_jax.files import write_atomically

FORMATS = ("jax", "onnx", "torchvision")
flags.DEFINE_string("workdir", None, "The run to export (its latest checkpoint).")
flags.mark_flag_as_required("workdir")
flags.DEFINE_enum("format", None, FORMATS, "What to write.")
flags.mark_flag_as_required("format")
flags.DEFINE_string("output", None, "The file to write.")
flags.mark_flag_as_required("output")
flags.DEFINE_bool("overwrite", False, "Replace PATH and PATH.json if they exist.")
FLAGS = flags.FLAGS

# How close onnxruntime's logits must be to ours (relative to the largest logit).
ONNX_TOLERANCE = 1e-4


def _export_jax(run, path: str) -> dict:
    from resnet_jax.interop.export import export_with_weights

    exported = export_with_weights(run.model, run.variables, ("b", *run.image_shape))
    write_atomically(path, bytes(exported.serialize()))
    return {"layout": "NHWC", "shape": ["batch", *run.image_shape], "dtype": "float32"}


def _torch_model(run):
    from resnet_jax.interop import torch_models, torchvision_weights

    options = {"shortcut": run.config.shortcut} if _is_cifar(run) else {}
    model = torch_models.create_torch_model(
        run.config.model, num_classes=len(run.class_names), in_channels=run.image_shape[-1],
        **options)
    model.load_state_dict(torchvision_weights.to_torchvision(run.config.model, run.variables),
                          strict=True)
    return model.eval()


def _export_onnx(run, path: str) -> dict:
    import warnings

    import numpy as np
    import onnxruntime  # present: main checked the export extra
    import torch

    from resnet_jax.train import inference
    model = _torch_model(run)
    height, width, channels = run.image_shape
    example = torch.zeros(2, channels, height, width)
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(model, (example,), tmp, dynamo=False, input_names=["images"],
                          output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    images = np.random.default_rng(0).standard_normal((3, height, width, channels),
                                                      dtype=np.float32)
    ours = inference.logits_fn(run)(images)
    session = onnxruntime.InferenceSession(tmp, providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"images": np.ascontiguousarray(images.transpose(0, 3, 1, 2))})[0]
    difference = float(np.max(np.abs(theirs - ours)) / max(np.max(np.abs(ours)), 1e-12))
    if not difference <= ONNX_TOLERANCE:
        os.remove(tmp)
        raise AssertionError(f"onnxruntime's logits differ from ours by {difference:.2e} "
                             f"(relative), more than {ONNX_TOLERANCE}: the export is wrong")
    os.replace(tmp, path)
    print(f"checked: onnxruntime's logits equal ours to {difference:.1e} (relative)")
    return {"layout": "NCHW", "shape": ["batch", channels, height, width], "dtype": "float32",
            "input_name": "images", "output_name": "logits"}


def _export_torchvision(run, path: str) -> dict:
    import torch

    from resnet_jax.interop import torchvision_weights

    state_dict = torchvision_weights.to_torchvision(run.config.model, run.variables)
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    write_atomically(path, buffer.getvalue())
    height, width, channels = run.image_shape
    load = (f"resnet_jax.interop.torch_models.create_torch_model({run.config.model!r}, "
            f"num_classes={len(run.class_names)})" if _is_cifar(run) else
            f"torchvision.models.{run.config.model}(num_classes={len(run.class_names)})")
    return {"layout": "NCHW", "shape": ["batch", channels, height, width], "dtype": "float32",
            "load": f"{load}.load_state_dict(torch.load(PATH, weights_only=True))"}


def _is_cifar(run) -> bool:
    """CIFAR-family models have no torchvision class: their twin is ours."""
    from resnet_jax import models
    return models.is_cifar(run.config.model)


_EXPORTERS = {"jax": _export_jax, "onnx": _export_onnx, "torchvision": _export_torchvision}
_EXTRAS = {"onnx": "export", "torchvision": "torch"}  # what a format needs beyond [train]


def main(argv):
    from resnet_jax import environment
    from resnet_jax.errors import UserError
    from resnet_jax.train import inference

    output = FLAGS.output
    sidecar = output + ".json"
    existing = [p for p in (output, sidecar) if os.path.exists(p)]
    if existing and not FLAGS.overwrite:
        raise UserError(f"{existing[0]} exists; choose another --output or pass --overwrite")
    if os.path.dirname(output) and not os.path.isdir(os.path.dirname(output)):
        raise UserError(f"the folder of --output, {os.path.dirname(output)}, does not exist")
    if FLAGS.format in _EXTRAS:
        environment.require_extra(_EXTRAS[FLAGS.format], f"--format {FLAGS.format}")
    run = inference.from_workdir(FLAGS.workdir, kernels="xla")
    environment.announce("xla", run.config.dtype)
    try:
        preprocessing = inference.eval_preprocessing(run.config)
    except UserError:
        preprocessing = None  # a run on arrays: the inputs are the dataset's own
    inputs = _EXPORTERS[FLAGS.format](run, output)
    record = {"format": FLAGS.format, "model": run.config.model,
              "workdir": os.path.abspath(FLAGS.workdir), "step": run.step,
              "classes": list(run.class_names), "input": inputs,
              "preprocessing": preprocessing or f"the {run.config.dataset} dataset's arrays"}
    write_atomically(sidecar, json.dumps(record, indent=2) + "\n")
    print(f"wrote {output} ({FLAGS.format}) and {sidecar} (classes and preprocessing)")


def run():
    cli.run(main, "export")


if __name__ == "__main__":
    run()
