"""Classifies image files with a run's checkpoint (its best by default where it keeps one).

    python predict.py --workdir W [--checkpoint best|latest|STEP] [--top_k 5] [--json] PATH...
    python predict.py --config configs/folder.py --config.model=resnet50 \\
        --config.init_from=torchvision:resnet50 PATH...      # weights, no run: classes 0..N-1

PATH: image files (JPEG, PNG, BMP, GIF) or folders (searched recursively). Each image is
preprocessed exactly as the run's evaluation preprocesses its images. Per image: the top-k
class names with their probabilities; with --json, one JSON object per line:
{"path": ..., "top_k": [{"class": NAME, "probability": P}, ...]}. A multi-label run prints
every label whose probability is >= --threshold (default: the run's `threshold`, 0.5):
{"path": ..., "labels": [{"class": NAME, "probability": P}, ...]}.
"""

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from resnet_jax.cli import flags as cli
from resnet_jax.files import printable

flags.DEFINE_string("workdir", None, "The run whose model classifies the images.")
config_flags.DEFINE_config_file(
    "config", None, "Instead of --workdir: a config whose init_from names the weights.",
    lock_config=True)
cli.define_checkpoint_flag()
flags.DEFINE_integer("top_k", 5, "How many classes to show per image.")
flags.DEFINE_bool("json", False, "One JSON object per image and line.")
flags.DEFINE_integer("batch_size", 32, "Images per forward pass.")
flags.DEFINE_float("threshold", None, "Multi-label runs: the probability from which a label "
                   "is shown (default: the run's threshold).")
FLAGS = flags.FLAGS


def main(argv):
    import numpy as np

    from resnet_jax import environment
    from resnet_jax.data import folders
    from resnet_jax.errors import UserError
    from resnet_jax.runs import inference

    if len(argv) < 2:
        raise app.UsageError("give image files or folders to classify")
    if FLAGS.top_k < 1:
        raise UserError(f"--top_k must be >= 1, got {FLAGS.top_k}")
    if FLAGS.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
    if FLAGS.threshold is not None and not 0 < FLAGS.threshold < 1:
        raise UserError(f"--threshold must be in (0, 1), got {FLAGS.threshold}")
    if (FLAGS.workdir is None) == (FLAGS.config is None):
        raise app.UsageError("give --workdir W (a run), or --config CFG with "
                             "--config.init_from=WEIGHTS")
    run = (inference.from_workdir(FLAGS.workdir, which=FLAGS.checkpoint) if FLAGS.workdir
           else inference.from_config(FLAGS.config))
    environment.announce(run.plan.model.kernels, run.plan.model.dtype,
                         file=sys.stderr)  # stdout: the results
    run.contract.require_image_files()
    paths = folders.find_images(argv[1:])
    # uint8 pixels in, normalised on the device as the evaluation step does
    logits_of = inference.logits_fn(run, run.contract.normalization)
    batch_size = min(FLAGS.batch_size, len(paths))  # one image: a batch of one
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        pixels = np.stack([run.contract.read_image(p) for p in chunk])
        # A fixed batch shape (padded), so that one compilation serves every chunk.
        padded = np.zeros((batch_size, *pixels.shape[1:]), pixels.dtype)
        padded[:len(chunk)] = pixels
        found = run.contract.predict(logits_of(padded)[:len(chunk)], FLAGS.top_k,
                                     FLAGS.threshold)
        for path, prediction in zip(chunk, found):
            if FLAGS.json:
                print(json.dumps({"path": path, **prediction}), flush=True)
            else:
                shown = ", ".join(f"{printable(t['class'])} {t['probability']:.4f}"
                                  for t in next(iter(prediction.values())))
                print(f"{printable(path)}: {shown or '(no label)'}", flush=True)


main.takes_arguments = True


def run():
    cli.run(main, "prediction")


if __name__ == "__main__":
    run()
