"""Exports a run's checkpoint for serving (its best by default where it keeps one).

    python export.py --workdir W --format jax|onnx|torchvision --output PATH \\
        [--checkpoint best|latest|STEP]
    python export.py --config configs/folder.py --config.model=resnet50 \\
        --config.init_from=torchvision:resnet50 --format onnx --output PATH     # weights

- jax: a serialized `jax.export` artifact (StableHLO; any batch size), float32 NHWC input,
  lowered for cpu, cuda, rocm and tpu (--platforms to choose) wherever it is made; load with
  `jax.export.deserialize(open(PATH, "rb").read()).call(images)`, with the same jax or a
  newer one (PATH.json records the version). `export.py --check PATH` says whether it runs
  here (one line, exit 2 if not) and runs it once.
- onnx: an ONNX model (input "images", float32 NCHW, any batch size; output "logits"),
  checked with onnxruntime against this project's logits before it is kept.
- onnx with --quantize int8 (a run on image folders): the int8 model onnxruntime's static
  quantiser makes (QDQ, per-channel int8 weights, uint8 activations calibrated on
  --calibration_images of the run's training images); the command prints float32 and int8
  top-1 on the run's evaluation split and their speed here; PATH.json records how.
- torchvision: a state dict that `torchvision.models.<model>(num_classes=N)` loads with
  `strict=True` (CIFAR-family models: `resnet_jax.interop.torch_models.create_torch_model`).

Beside PATH, PATH.json records the model, the class names, the input layout and the exact
preprocessing (decode to RGB, resize, center crop, mean, std). Nothing is overwritten unless
--overwrite; files are written whole or not at all. The exporters themselves are importable:
`resnet_jax.interop.export` (write_jax, write_onnx, write_torchvision).
"""

from absl import app, flags
from ml_collections import config_flags

from resnet_jax.cli import flags as cli

FORMATS = ("jax", "onnx", "torchvision")  # resnet_jax.runs.inference.EXPORT_FORMATS
flags.DEFINE_string("workdir", None, "The run to export.")
config_flags.DEFINE_config_file(
    "config", None, "Instead of --workdir: a config whose init_from names the weights.",
    lock_config=True)
cli.define_checkpoint_flag()
flags.DEFINE_enum("format", None, FORMATS, "What to write.")
flags.DEFINE_string("output", None, "The file to write.")
flags.DEFINE_bool("overwrite", False, "Replace PATH and PATH.json if they exist.")
flags.DEFINE_list("platforms", ["cpu", "cuda", "rocm", "tpu"],
                  "--format jax: the platforms the artifact is lowered for.")
flags.DEFINE_string("check", None, "A .jax file: check that it runs here, and run it once.")
flags.DEFINE_enum("quantize", "", ["", "int8"], "--format onnx of a run on image folders: an "
                  "int8 model (onnxruntime's static quantiser) calibrated on its training "
                  "images; float32 and int8 top-1 on its evaluation split are printed.")
flags.DEFINE_integer("calibration_images", 300, "--quantize int8: how many training images "
                     "calibrate the activations' ranges.")
FLAGS = flags.FLAGS


def main(argv):
    from resnet_jax.runs import inference

    if FLAGS.check:
        return _check(FLAGS.check)
    if not FLAGS.format or not FLAGS.output:
        raise app.UsageError("give --format and --output (or --check PATH.jax)")
    if (FLAGS.workdir is None) == (FLAGS.config is None):
        raise app.UsageError("give --workdir W (a run), or --config CFG with "
                             "--config.init_from=WEIGHTS")
    inference.export_run(FLAGS.workdir, FLAGS.format, FLAGS.output, FLAGS.overwrite,
                         FLAGS.checkpoint, FLAGS.config, FLAGS.platforms, FLAGS.quantize,
                         FLAGS.calibration_images)


def _check(path: str) -> None:
    import jax
    import numpy as np

    from resnet_jax.interop import export

    exported = export.load_jax(path)
    images = np.zeros((1, *exported.in_avals[0].shape[1:]), np.float32)
    logits = np.asarray(exported.call(images))
    print(f"{path}: runs here (jax {jax.__version__}, {jax.default_backend()}): logits of "
          f"shape {logits.shape}; lowered for {', '.join(exported.platforms)}")


def run():
    cli.run(main, "export")


if __name__ == "__main__":
    run()
