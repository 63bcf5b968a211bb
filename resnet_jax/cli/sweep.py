"""Runs a grid of configs, one training per sub-workdir, and summarises them.

    python -m resnet_jax.experiments.sweep --config configs/digits.py --workdir W \\
        --set learning_rate=0.05,0.1 --set weight_decay=0,5e-4 [--random N] [--commands]

Each combination trains through the normal training path in W/runs/KEY=VALUE,... (checkpoints,
resume, metrics), one at a time on all devices. Running the same command again skips finished
runs and resumes an interrupted one. At the end: W/results.csv and W/results.md (one row per
run, best eval top-1 first) and W/sweep.png (every run's curves overlaid). `--random N` trains a
seeded sample of N combinations; `--commands` prints one train.py command per combination (for
a SLURM array or another scheduler) and trains nothing. Several processes: start the same
command in each, with the flags train.py takes.
"""

from __future__ import annotations

import os

from resnet_jax.experiments import sweep as experiment


def define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    from resnet_jax.cli import flags as cli

    flags.DEFINE_string("workdir", None, "The sweep's directory: runs/, results, figure.")
    flags.mark_flag_as_required("workdir")
    config_flags.DEFINE_config_file("config", None, "The config every run starts from "
                                    "(a file or a shipped config's name).", lock_config=True)
    flags.mark_flag_as_required("config")
    flags.DEFINE_multi_string("set", [], "KEY=VALUE1,VALUE2,...: a swept config key.")
    flags.DEFINE_integer("random", 0, "Train a seeded random sample of this many "
                         "combinations instead of the whole grid.")
    flags.DEFINE_integer("random_seed", 0, "The seed of --random's sample.")
    flags.DEFINE_bool("commands", False, "Print one train.py command per run and exit.")
    cli.define_launch_flags()


def main(argv) -> None:
    import jax
    from absl import flags

    from resnet_jax.cli import flags as cli

    FLAGS = flags.FLAGS
    grid = experiment.parse_sets(FLAGS.set, FLAGS.config)
    planned = experiment.runs(grid, FLAGS.random, FLAGS.random_seed)
    if FLAGS.commands:
        import sys

        config_path = FLAGS["config"].config_filename
        base = experiment.config_overrides(sys.argv[1:])
        for run in planned:
            print(experiment.train_command(config_path, FLAGS.workdir, run, base))
        return
    cli.launch()
    experiment.train_all(FLAGS.config, FLAGS.workdir, planned)
    if jax.process_index() == 0:
        rows = experiment.write_results(FLAGS.workdir, planned)
        experiment.plot(FLAGS.workdir, planned, os.path.join(FLAGS.workdir, "sweep.png"))
        print(open(os.path.join(FLAGS.workdir, "results.md")).read() if rows else "",
              f"results: {FLAGS.workdir}/results.csv, results.md; figure: "
              f"{FLAGS.workdir}/sweep.png", sep="", flush=True)


def run() -> None:
    from resnet_jax.cli import flags as cli

    define_flags()
    cli.run(main, "a sweep")


if __name__ == "__main__":
    run()
