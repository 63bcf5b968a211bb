"""Hyper-parameter search on Optuna: adaptive sampling, early stopping, many workers on one study.

    python -m resnet_jax.experiments.search --config configs/digits.py --workdir W \\
        --space learning_rate=loguniform:0.01:1 --space weight_decay=loguniform:1e-5:1e-2 \\
        --trials 20 [--sampler tpe|random|grid|cmaes] [--pruner asha|hyperband|median|none] \\
        [--objective eval_top1|eval_loss] [--storage URL] [--config.KEY=VALUE ...]

Each trial is a normal run in W/trials/NNNN (checkpoints, metrics, report, plots, resume, the
lock, the divergence guard). Every evaluation (`--config.eval_every_steps`) is reported to the
study, whose pruner may stop the trial there (saved, recorded PRUNED); a diverged trial is
recorded FAIL and the search goes on. The study lives in W/study.journal (or `--storage`, e.g.
postgresql://...), so the same command again continues it, and the same command in several
processes or on several hosts shares it: `--trials` is the study's total. A killed worker's
trial is resumed from its checkpoint by the next worker. At the end: W/results.csv and
W/results.md (one row per trial, best first) and figures in W (optimisation history, parameter
importances, every trial's eval curve). `optuna-dashboard W/study.journal` shows the study live.
"""

from __future__ import annotations

from resnet_jax import errors
from resnet_jax.experiments import search as experiment
from resnet_jax.experiments import space as space_lib


def define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    from resnet_jax.cli import flags as cli

    flags.DEFINE_string("workdir", None, "The search's directory: trials/, the study's "
                        "journal, results, figures.")
    flags.mark_flag_as_required("workdir")
    config_flags.DEFINE_config_file("config", None, "The config every trial starts from "
                                    "(a file or a shipped config's name).", lock_config=True)
    flags.mark_flag_as_required("config")
    flags.DEFINE_multi_string("space", [], "KEY=SPEC: a searched config key; SPEC is "
                              "loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH or a comma "
                              "list of choices.")
    flags.DEFINE_integer("trials", None, "The study's trials in all, every worker together.")
    flags.mark_flag_as_required("trials")
    flags.DEFINE_enum("sampler", "tpe", experiment.SAMPLERS,
                      "How the next trial's values are chosen.")
    flags.DEFINE_enum("pruner", "asha", experiment.PRUNERS,
                      "What stops a poor trial at an evaluation.")
    flags.DEFINE_enum("objective", "eval_top1", list(experiment.trials.OBJECTIVES),
                      "What the search optimises: the best eval top-1, the lowest eval loss, "
                      "or (multi-label runs) the best eval mean average precision of a "
                      "trial.")
    flags.DEFINE_integer("min_resource", 0, "The steps every trial trains before the pruner "
                         "may stop it (0: one epoch); never less than the warm-up.")
    flags.DEFINE_string("storage", "", "An Optuna storage URL shared by every worker "
                        "(postgresql://..., mysql://..., sqlite:///...); default: the journal "
                        "file W/study.journal.")
    flags.DEFINE_string("study", "", "The study's name in the storage, for a new search "
                        "directory (default: the folder's name and a random suffix); recorded "
                        "in W/study.json, so a renamed or copied directory continues its own.")
    flags.DEFINE_integer("seed", None, "The sampler's seed (default: a fresh one per worker); "
                         "offset by the study's trials so far, so a continued study draws new "
                         "values.")
    cli.define_launch_flags()


def main(argv) -> None:
    from absl import flags

    from resnet_jax.cli import flags as cli

    FLAGS = flags.FLAGS
    if FLAGS.trials < 1:
        raise errors.UserError(f"--trials must be >= 1, got {FLAGS.trials}")
    config = FLAGS.config
    space = space_lib.parse_space(FLAGS.space, config)
    objective = FLAGS.objective
    experiment.create_sampler(FLAGS.sampler, space, FLAGS.trials, FLAGS.seed)  # its checks
    experiment.check_objective(objective, config)
    experiment.create_pruner(FLAGS.pruner, config)  # its checks, before anything starts
    cli.launch()
    resource = (experiment.min_resource(config, space, FLAGS.min_resource)
                if FLAGS.pruner != "none" else 0)
    pruner = experiment.create_pruner(FLAGS.pruner, config, resource)
    experiment.search(config, FLAGS.workdir, FLAGS.space, space, objective, FLAGS.trials,
                      FLAGS.sampler, FLAGS.seed, pruner, FLAGS.storage, FLAGS.study)


def run() -> None:
    from resnet_jax.cli import flags as cli

    define_flags()
    cli.run(main, "a hyper-parameter search")


if __name__ == "__main__":
    run()
