"""Command-line parsing with one-line errors (exit 2): configs by file or by the name of one
shipped in `resnet_jax/configs` (with its `:ARGUMENT`), an unknown config key with the nearest
one, and --help ending with status 0 and where the config keys are listed."""

from __future__ import annotations

import re
import sys

from absl import flags

from resnet_jax import configs

FLAGS = flags.FLAGS


def _with_shipped_configs(argv: list[str]) -> list[str]:
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            argv[i] = "--config=" + configs.shipped_config(arg.split("=", 1)[1])
        elif arg == "--config" and i + 1 < len(argv):
            argv[i + 1] = configs.shipped_config(argv[i + 1])
    return argv


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
        lines = [line for line in str(error).splitlines() if line.strip()]
        if "Error whilst parsing config file" in lines[0] and len(lines) > 1:
            lines = [lines[-1].removeprefix("ValueError: ")]  # what the config's code raised
        print(f"error: {lines[0]}", file=sys.stderr)
    sys.exit(2)
