"""Trains and evaluates a ResNet: flags -> `resnet_jax.train.loop.train_and_evaluate`.

    python train.py --config configs/digits.py --workdir runs/digits [--config.KEY=VALUE ...]
    resnet-jax-train --config digits --workdir runs/digits          (installed)
    python train.py --config configs/folder.py --config.data_dir=DIR --print_config

Running the same command again with the same workdir resumes from the latest checkpoint.
--print_config prints the resolved config as the run records it (config.json) and exits.

Multi-process (docs/scaling.md): on SLURM (`srun`), Open MPI and Cloud TPU pod slices
the processes find each other; elsewhere give every process the same
`--coordinator_address HOST:PORT --num_processes N` and its own `--process_id I` (0 on the host
at HOST).
"""

from absl import app, flags
from ml_collections import config_flags

from resnet_jax.cli import flags as cli

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the report.")
flags.DEFINE_bool("print_config", False, "Print the resolved config (as config.json records "
                  "it) and exit.")
config_flags.DEFINE_config_file(
    "config", None, "A config file (configs/NAME.py), or the NAME of a shipped one.",
    lock_config=True)
cli.define_launch_flags()
FLAGS = flags.FLAGS


def main(argv):
    if FLAGS.config is None:
        raise app.UsageError("--config is required, e.g. --config configs/digits.py")
    if FLAGS.print_config:
        import json

        from resnet_jax import plan as plans
        from resnet_jax.runs import records

        plans.validate_config(FLAGS.config)  # a config that cannot run: one line, exit 2
        print(json.dumps(records.resolved(FLAGS.config), indent=2, sort_keys=True))
        return
    if FLAGS.workdir is None:
        raise app.UsageError("--workdir is required: the run's directory")
    cli.launch()
    from resnet_jax.train import loop
    loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run():
    cli.run(main, "training")


if __name__ == "__main__":
    run()
