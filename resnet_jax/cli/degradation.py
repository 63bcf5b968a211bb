"""The paper's central experiment (Fig. 1 / Fig. 6): plain and residual nets at growing depth,
trained with one recipe; a deeper *plain* net ends with a higher training error (degradation),
a deeper residual net does not.

    python -m resnet_jax.experiments.degradation --config configs/digits.py --depths 20,56 \\
        --workdir W [--config.KEY=VALUE ...] [--families plain,resnet]

Trains plainD and resnetD for each depth D (CIFAR-family models) through the normal training
path, one sub-workdir each (W/runs/MODEL; re-running finishes only what is missing), then draws
W/degradation.png and .svg as the paper does: training error (thin) and eval error (bold)
against iterations, plain nets left, residual nets right, one colour per depth; and writes
W/degradation.csv / .md with each run's final errors. The training error is the mean over the
last 10% of the steps (on the augmented training batches, as the paper's curves are).
"""

from __future__ import annotations

import os

from resnet_jax.errors import UserError
from resnet_jax.experiments import degradation as experiment


def define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    from resnet_jax.cli import flags as cli

    flags.DEFINE_string("workdir", None, "The experiment's directory: runs/, table, figure.")
    flags.mark_flag_as_required("workdir")
    config_flags.DEFINE_config_file("config", None, "The recipe every net trains with.",
                                    lock_config=True)
    flags.mark_flag_as_required("config")
    flags.DEFINE_list("depths", ["20", "56"], "Depths of the CIFAR-family nets (6n+2).")
    flags.DEFINE_list("families", list(experiment.FAMILIES), "plain, resnet, or both.")
    cli.define_launch_flags()


def main(argv) -> None:
    import jax
    from absl import flags

    from resnet_jax.cli import flags as cli

    FLAGS = flags.FLAGS
    try:
        depths = [int(d) for d in FLAGS.depths]
    except ValueError:
        raise UserError(f"--depths must be integers, got {','.join(FLAGS.depths)}") from None
    planned = experiment.planned_runs(depths, FLAGS.families)
    cli.launch()
    experiment.sweep.train_all(FLAGS.config, FLAGS.workdir, planned)
    if jax.process_index() == 0:
        rows = experiment.write_table(FLAGS.workdir, planned)
        config = FLAGS.config
        experiment.plot(FLAGS.workdir, planned, f"{config.dataset}, batch {config.batch_size}, "
                                                f"lr {config.learning_rate} ({config.schedule})")
        print(open(os.path.join(FLAGS.workdir, "degradation.md")).read() if rows else "",
              f"figure: {FLAGS.workdir}/degradation.png (.svg); table: "
              f"{FLAGS.workdir}/degradation.md (.csv)", sep="", flush=True)


def run() -> None:
    from resnet_jax.cli import flags as cli

    define_flags()
    cli.run(main, "the degradation experiment")


if __name__ == "__main__":
    run()
