"""What the command-line tools share: flag parsing with one-line errors (exit 2), configs by
file or by the name of one shipped in `resnet_jax/configs`, and running a command so that a
user's mistake is one line and a bug a traceback."""

from __future__ import annotations

import os
import re
import sys

from absl import app, flags, logging

from resnet_jax import configs
from resnet_jax.cli.launching import define_launch_flags, launch  # noqa: F401 (the CLIs' API)

FLAGS = flags.FLAGS


def _with_shipped_configs(argv: list[str]) -> list[str]:
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            argv[i] = "--config=" + configs.shipped_config(arg.split("=", 1)[1])
        elif arg == "--config" and i + 1 < len(argv):
            argv[i + 1] = configs.shipped_config(argv[i + 1])
    return argv


def define_checkpoint_flag() -> None:
    """--checkpoint, as evaluate, predict, export and embed take it."""
    flags.DEFINE_string("checkpoint", "auto", "Which of the run's checkpoints: best, latest or "
                        "a step (default: best where the run keeps one, else latest).")


HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")
CONFIG_KEYS_HELP = ("Config keys: every key, with its default and meaning, is listed in "
                    "resnet_jax/configs/default.py; set one with --config.KEY=VALUE, and see "
                    "the resolved config with train.py --config CFG --print_config.")


def _unknown_key(error: Exception) -> str:
    """ml_collections' KeyError for a config key that does not exist, as one line."""
    import difflib

    from resnet_jax.configs import default

    text = str(error.args[0] if error.args else error)
    found = re.search(r"[A-Za-z_][\w.]*", text)  # the message comes quoted, even twice
    key = found.group(0) if found else text
    near = difflib.get_close_matches(key, list(default.get_config().keys()), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return (f"unknown config key {key!r}{hint}; every key is listed in "
            f"resnet_jax/configs/default.py")


def parse_flags(argv):
    """absl's flag parsing, with bad flags and config overrides as one line and exit status 2;
    --help (which absl ends with status 1) ends with 0 and where the config keys are listed."""
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        try:
            FLAGS(argv)
        except SystemExit:
            pass
        print(CONFIG_KEYS_HELP)
        sys.exit(0)
    try:
        argv = FLAGS(_with_shipped_configs(argv))
        if "config" in FLAGS and FLAGS.config is not None:
            _ = FLAGS.config.keys  # ml_collections defers a load error to the first use
        return argv
    except OSError as error:  # the config file is missing or cannot be read
        reason = [line.strip() for line in str(error).splitlines() if line.strip()][-1]
        shipped = configs.shipped_names()
        print(f"error: cannot load the --config file: {reason} (shipped configs: "
              f"{', '.join(shipped)})", file=sys.stderr)
    except SyntaxError as error:
        print(f"error: the --config file {error.filename}, line {error.lineno}: {error.msg}",
              file=sys.stderr)
    except (AttributeError, KeyError) as error:  # ml_collections: no such config key
        print(f"error: {_unknown_key(error)}", file=sys.stderr)
    except (flags.Error, ValueError, TypeError) as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
    sys.exit(2)


def quiet_logs() -> None:
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
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
