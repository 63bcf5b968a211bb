"""Evaluates a run's latest checkpoint, or a weights file, on every held-out image once.

    python evaluate.py --workdir W [--data_dir DIR] [--split NAME]
    python evaluate.py --config configs/folder.py --config.data_dir=DIR \
        --config.init_from=resnet50.pth [--report PATH]

With --workdir, W alone suffices (the run's config is W/config.json): prints top-1/top-5 and
writes W/report_SPLIT.txt (per-class precision/recall/F1 and the confusion matrix) and
W/plots/confusion_matrix_SPLIT.png. The training metrics are not touched. With --config, the
weights named by init_from (a torchvision state dict, or a workdir) are evaluated with this
project's pipeline and nothing is written but --report.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from resnet_jax.cli import flags as cli

flags.DEFINE_string("workdir", None, "The run to evaluate (its latest checkpoint).")
config_flags.DEFINE_config_file(
    "config", None, "Without --workdir: a config whose init_from names the weights.",
    lock_config=True)
flags.DEFINE_string("data_dir", None, "Evaluate on this data dir instead of the run's.")
flags.DEFINE_string("split", None, "The split (TFDS) or folder (image folders) to evaluate; "
                    "default: the run's held-out split.")
flags.DEFINE_string("report", None, "With --config: write the report to this file.")
FLAGS = flags.FLAGS


def _split_name(info, split: str | None) -> str:
    name = split or os.path.basename(os.path.normpath(info.eval_from)) or "eval"
    return name if "held out" not in info.eval_from else "holdout"


def main(argv):
    import jax

    from resnet_jax import environment
    from resnet_jax.data import datasets
    from resnet_jax.errors import UserError
    from resnet_jax.launch import sharding
    from resnet_jax.train import evaluation, inference, steps, warm_start
    from resnet_jax.train.config import validate_config

    if (FLAGS.workdir is None) == (FLAGS.config is None):
        raise app.UsageError("give --workdir W (a run), or --config CFG with "
                             "--config.init_from=WEIGHTS")
    if FLAGS.workdir:
        run = inference.from_workdir(FLAGS.workdir)
        config = run.config
    else:
        config = FLAGS.config
        if not config.init_from:
            raise UserError("--config without --workdir evaluates the weights that "
                            "--config.init_from names; set it")
    if FLAGS.data_dir is not None:
        config.data_dir = FLAGS.data_dir
    if FLAGS.split is not None:
        config.eval_split = FLAGS.split
    validate_config(config)
    source = datasets.create_source(config)
    info = source.info
    mesh = sharding.create_mesh()
    environment.announce(config.kernels, config.dtype)
    if FLAGS.workdir:
        if tuple(info.class_names) != tuple(run.class_names):
            raise UserError(f"the data's classes ({', '.join(info.class_names[:8])}...) are "
                            f"not the run's ({', '.join(run.class_names[:8])}...)")
        model, variables = run.model, run.variables
        what = f"{FLAGS.workdir} at step {run.step}"
    else:
        from resnet_jax.train.config import model_from_config
        model = model_from_config(config, info.num_classes, info.image_shape[-1])
        fresh = jax.jit(model.init, static_argnames="train")(
            jax.random.PRNGKey(0), jax.numpy.zeros((1, *info.image_shape)), train=False)
        fresh = jax.device_get(fresh)
        loaded = warm_start.read(config.init_from, fresh)
        variables, summary = warm_start.merge(fresh, loaded, config.init_from, config.model,
                                              complete=True)
        print(summary, flush=True)
        what = config.init_from
    state = steps.TrainState.create(apply_fn=model.apply, tx=_no_optimizer(),
                                    params=variables["params"],
                                    batch_stats=variables["batch_stats"])
    state = jax.device_put(state, sharding.replicated(mesh))
    eval_fn, _ = steps.compile_eval_step(
        state, mesh, (config.eval_batch_size // jax.process_count(), *info.eval_shape),
        info.pixel_normalization)
    values, labels, predictions = evaluation.evaluate(eval_fn, state, source,
                                                      config.eval_batch_size, mesh,
                                                      sys.stderr.isatty())
    header = f"{what}: {config.model} on {info.name}, evaluated on {info.eval_from}"
    examples = "training examples" if config.eval_split == "train" else "held-out examples"
    print(f"{header}\n{evaluation.summary(values, examples)}", flush=True)
    if jax.process_index() != 0:
        return
    if FLAGS.workdir:
        report = evaluation.record(FLAGS.workdir, f"_{_split_name(info, FLAGS.split)}",
                                   labels, predictions, values, info.class_names, header)
        print(f"report: {report}", flush=True)
    elif FLAGS.report:
        from resnet_jax.train import metrics
        metrics.write_report(FLAGS.report, labels, predictions, values["top5"],
                             info.class_names, header)
        print(f"report: {FLAGS.report}", flush=True)


def _no_optimizer():
    import optax
    return optax.identity()


def run():
    cli.run(main, "evaluation")


if __name__ == "__main__":
    run()
