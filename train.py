"""Trains and evaluates a ResNet. Thin CLI over `resnet_jax.train.loop.train_and_evaluate`.

    python train.py --config configs/digits.py --workdir runs/digits [--config.KEY=VALUE ...]

Running the same command again with the same workdir resumes from the latest checkpoint.

Multi-process (see README, "Scaling out"): on SLURM (`srun`), Open MPI and Cloud TPU pod slices
the processes find each other; elsewhere give every process the same
`--coordinator_address HOST:PORT --num_processes N` and its own `--process_id I` (0 on the host
at HOST).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the report.")
flags.mark_flag_as_required("workdir")
config_flags.DEFINE_config_file("config", None, "A config file in configs/.", lock_config=True)
flags.DEFINE_string("coordinator_address", None,
                    "HOST:PORT of process 0, for a multi-process run JAX cannot detect itself.")
flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")
flags.DEFINE_float("distributed_timeout_s", 60.0,
                   "How long processes wait for each other at start-up before giving up.")
FLAGS = flags.FLAGS


def parse_flags(argv):
    """absl's flag parsing, with bad flags and config overrides as one line and exit status 2."""
    try:
        argv = FLAGS(argv)
        if FLAGS.config is not None:
            FLAGS.config.keys  # ml_collections defers a load error to the first use
        return argv
    except OSError as error:  # the config file is missing or cannot be read
        reason = [line.strip() for line in str(error).splitlines() if line.strip()][-1]
        print(f"error: cannot load the --config file: {reason}", file=sys.stderr)
    except SyntaxError as error:
        print(f"error: the --config file {error.filename}, line {error.lineno}: {error.msg}",
              file=sys.stderr)
    except (AttributeError, KeyError) as error:  # ml_collections: no such config key
        key = str(error.args[0] if error.args else error).strip("'\"")
        print(f"error: invalid config override: {key!r} is not a config key (every key is "
              f"listed in configs/default.py)", file=sys.stderr)
    except (flags.Error, ValueError, TypeError) as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
    sys.exit(2)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.config is None:
        raise app.UsageError("--config is required, e.g. --config configs/digits.py")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    # After flag parsing: a bad flag fails fast.
    from resnet_jax import errors
    from resnet_jax.launch import host_memory, multiprocess

    try:
        with errors.reported():
            multiprocess.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id, FLAGS.distributed_timeout_s)
    except multiprocess.LaunchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    host_memory.reuse_freed_memory()  # before the input pipeline and XLA allocate
    import jax
    if jax.process_index() != 0 and not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # one voice: process 0 logs for the run

    from resnet_jax.train import checkpoint, loop
    checkpoint.report_errors_once()
    with errors.reported():  # a UserError: one line, exit 2; anything else is a bug: traceback
        loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
