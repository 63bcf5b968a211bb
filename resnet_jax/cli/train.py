"""Trains and evaluates a ResNet: flags -> `resnet_jax.train.loop.train_and_evaluate`.

    python train.py --config configs/digits.py --workdir runs/digits [--config.KEY=VALUE ...]
    resnet-jax-train --config digits --workdir runs/digits          (installed)

Running the same command again with the same workdir resumes from the latest checkpoint.

Multi-process (see README, "Scaling out"): on SLURM (`srun`), Open MPI and Cloud TPU pod slices
the processes find each other; elsewhere give every process the same
`--coordinator_address HOST:PORT --num_processes N` and its own `--process_id I` (0 on the host
at HOST).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from resnet_jax.cli import flags as cli

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the report.")
flags.mark_flag_as_required("workdir")
config_flags.DEFINE_config_file(
    "config", None, "A config file (configs/NAME.py), or the NAME of a shipped one.",
    lock_config=True)
flags.DEFINE_string("coordinator_address", None,
                    "HOST:PORT of process 0, for a multi-process run JAX cannot detect itself.")
flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")
flags.DEFINE_float("distributed_timeout_s", 60.0,
                   "How long processes wait for each other at start-up before giving up.")
FLAGS = flags.FLAGS


def main(argv):
    if FLAGS.config is None:
        raise app.UsageError("--config is required, e.g. --config configs/digits.py")
    # After flag parsing: a bad flag fails fast.
    from resnet_jax.launch import host_memory, multiprocess

    try:
        multiprocess.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                                FLAGS.process_id, FLAGS.distributed_timeout_s)
    except multiprocess.LaunchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    host_memory.reuse_freed_memory()  # before the input pipeline and XLA allocate
    import jax
    if jax.process_index() != 0 and not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # one voice: process 0 logs for the run

    from resnet_jax.train import loop
    loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
