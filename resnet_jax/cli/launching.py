"""The flags of a command that trains (how its processes find each other) and bringing the
processes together before anything else allocates."""

from __future__ import annotations

import sys

from absl import flags, logging

FLAGS = flags.FLAGS


def define_launch_flags() -> None:
    """The flags of a command that trains: how its processes find each other."""
    flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, for a "
                        "multi-process run JAX cannot detect itself.")
    flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
    flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")
    flags.DEFINE_float("distributed_timeout_s", 60.0,
                       "How long processes wait for each other at start-up before giving up.")


def launch() -> None:
    """Brings the processes together (one line and exit 1 if they cannot be), before the
    input pipeline and XLA allocate; process 0 alone logs."""
    from resnet_jax.launch import host_memory, multiprocess

    try:
        multiprocess.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                                FLAGS.process_id, FLAGS.distributed_timeout_s)
    except multiprocess.LaunchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    host_memory.reuse_freed_memory()
    import jax
    if jax.process_index() != 0 and not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # one voice: process 0 logs for the run
