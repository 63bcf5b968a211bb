"""Evaluates a run's checkpoint, or a weights file, on every held-out image once.

    python evaluate.py --workdir W [--checkpoint best|latest|STEP] [--data_dir DIR] \\
        [--split NAME] [--batch_size N] [--json]
    python evaluate.py --config configs/folder.py --config.data_dir=DIR \\
        --config.init_from=resnet50.pth [--report PATH]

With --workdir, W alone suffices (the run's config is W/config.json): prints top-1/top-5 and
writes W/report_SPLIT.txt (per-class precision/recall/F1 and the confusion matrix) and
W/plots/confusion_matrix_SPLIT.png. The training metrics are not touched. With --config, the
weights named by init_from (a torchvision state dict, or a workdir) are evaluated with this
project's pipeline and nothing is written but --report. --checkpoint: the run's best checkpoint
by default where it keeps one (best_metric), else its latest. --json: one JSON object on
stdout, {"step", "checkpoint", "top1", "top5" (or "map"), "loss", "count"}.
"""

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from resnet_jax.cli import flags as cli

flags.DEFINE_string("workdir", None, "The run to evaluate.")
cli.define_checkpoint_flag()
config_flags.DEFINE_config_file(
    "config", None, "Without --workdir: a config whose init_from names the weights.",
    lock_config=True)
flags.DEFINE_string("data_dir", None, "Evaluate on this data dir instead of the run's.")
flags.DEFINE_string("split", None, "The split (TFDS) or folder (image folders) to evaluate; "
                    "default: the run's held-out split.")
flags.DEFINE_string("report", None, "With --config: write the report to this file.")
flags.DEFINE_integer("batch_size", None, "Images per step (default: the config's "
                     "eval_batch_size).")
flags.DEFINE_bool("json", False, "One JSON object on stdout (the other lines go to stderr).")
FLAGS = flags.FLAGS


def main(argv):
    from resnet_jax.train import evaluation

    if (FLAGS.workdir is None) == (FLAGS.config is None):
        raise app.UsageError("give --workdir W (a run), or --config CFG with "
                             "--config.init_from=WEIGHTS")
    values = evaluation.evaluate_weights(
        workdir=FLAGS.workdir, config=FLAGS.config, data_dir=FLAGS.data_dir, split=FLAGS.split,
        report=FLAGS.report, which=FLAGS.checkpoint, batch_size=FLAGS.batch_size,
        out=sys.stderr if FLAGS.json else sys.stdout)
    if FLAGS.json:
        print(json.dumps(values), flush=True)


def run():
    cli.run(main, "evaluation")


if __name__ == "__main__":
    run()
