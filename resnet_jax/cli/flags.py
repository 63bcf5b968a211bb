"""What the command-line tools share: flag parsing with one-line errors (exit 2), configs by
file or by the name of one shipped in `resnet_jax/configs`, and running a command so that a
user's mistake is one line and a bug a traceback."""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from resnet_jax.cli.launching import define_launch_flags, launch  # noqa: F401 (the CLIs' API)
from resnet_jax.cli.parsing import parse_flags

FLAGS = flags.FLAGS


def define_checkpoint_flag() -> None:
    """--checkpoint, as evaluate, predict, export and embed take it."""
    flags.DEFINE_string("checkpoint", "auto", "Which of the run's checkpoints: best, latest or "
                        "a step (default: best where the run keeps one, else latest).")


def quiet_logs() -> None:
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
        # TensorFlow's C++ info and warning lines (an image that vanished mid-run: "OP_REQUIRES
        # failed ...", "Local rendezvous is aborting ...") would come before our one error line
        # saying the same; its errors still show. Read when TensorFlow is first imported; "1"
        # is what importing JAX sets where nothing was (--verbosity keeps them all).
        if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1") == "1":
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    else:  # asked for logs: TensorFlow's start-up notices too (resnet_jax.data.lazy_tf)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")


def run(main, job: str) -> None:
    """Runs `main(argv)` as a command: absl's flags, then `errors.reported()` around it. `job`
    ("training", "evaluation", ...) names what needs the train extra in a core-only install."""
    from resnet_jax import errors

    def wrapped(argv):
        if len(argv) > 1 and not getattr(main, "takes_arguments", False):
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        quiet_logs()
        from resnet_jax import extras
        with errors.reported():  # a UserError: one line, exit 2; anything else: traceback
            extras.require_extra("train", job)
            from resnet_jax.runs import checkpoint
            checkpoint.report_errors_once()
            return main(argv)

    # --helpshort lists the flags of the program's main module: the command's own flags are
    # defined in its module under resnet_jax/cli, whether started as train.py or as an
    # installed resnet-jax-train.
    sys.modules["__main__"].__doc__ = sys.modules[main.__module__].__doc__  # the usage text
    for flag in (FLAGS.get_flags_for_module(main.__module__)
                 + FLAGS.get_flags_for_module(__name__)):  # define_launch_flags'
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)  # absl's name of the main module
    try:
        app.run(wrapped, flags_parser=parse_flags)
    except SystemExit as stopped:  # the command ends: no background thread may hold it up
        status = stopped.code if isinstance(stopped.code, int) else int(stopped.code is not None)
        if status:
            errors.exit_within(errors.EXIT_GRACE_S, status)
        raise
    except BaseException:  # a bug: its traceback, then the same bound on the exit
        errors.exit_within(errors.EXIT_GRACE_S, 1)
        raise
