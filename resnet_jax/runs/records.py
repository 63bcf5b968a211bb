"""A run's record in its workdir, besides checkpoints and metrics: the resolved config
(`config.json`, written when the run starts, checked when it resumes) and its class names
(`classes.txt`, one per line), which evaluate, predict and export read back.
"""

from __future__ import annotations

import json
import os

import ml_collections

from resnet_jax.errors import UserError
from resnet_jax.files import write_atomically

CONFIG_FILE, CLASSES_FILE = "config.json", "classes.txt"
WEIGHTS_FILE = "weights.json"  # weights by name: the Hub repo and revision a run started from
EARLY_STOPPING_FILE = "early_stopping.json"  # where and why the run stopped early
SKIPPED_FILE = "skipped_images.txt"  # skip_bad_images: "path: why" of each file left out

# Keys a resumed run may change: where data and caches are, how it reports and saves, how far
# this invocation goes. Any other key changes the run itself, and is refused.
CHANGEABLE_ON_RESUME = frozenset({
    "data_dir", "compilation_cache_dir", "kernels", "progress_bar", "progress_interval_s",
    "log_every_steps", "eval_every_steps", "eval_every_epochs", "best_metric",
    "early_stopping_patience", "eval_batch_size", "eval_split",
    "checkpoint_every_steps", "keep_checkpoints", "stop_after_steps", "max_image_pixels",
    "threshold"})


# Keys that runs once recorded and that no longer exist: ignored when a run resumes.
# shuffle_buffer: ImageNet-style datasets were read in sequence through a shuffle buffer; they
# are read by index in an exact permutation now (a resumed run of that time continues in it).
RETIRED_KEYS = frozenset({"shuffle_buffer"})


class ConfigConflict(UserError):
    """A resumed run whose config differs from the one its workdir was started with."""


class NotARun(UserError):
    """A path that is not the workdir of a run (no config.json)."""


def _as_json(config) -> dict:
    return json.loads(json.dumps(config.to_dict() if hasattr(config, "to_dict") else config))


def defining_values(config) -> dict:
    """The config's values that define the run (what a resume may not change), as JSON values;
    checkpoints carry them, so a lost config.json cannot let a resume drift."""
    return _defining(_as_json(config))


def _defining(values: dict) -> dict:
    return {k: v for k, v in values.items() if k not in CHANGEABLE_ON_RESUME | RETIRED_KEYS}


def resolved(config) -> dict:
    current = _as_json(config)
    if current.get("data_dir"):  # evaluate and predict may run from another directory
        current["data_dir"] = os.path.abspath(os.path.expanduser(current["data_dir"]))
    return current


def check_config(workdir: str, config) -> None:
    """If WORKDIR/config.json is there, checks that `config` continues it: ConfigConflict
    naming every key that differs. Writes nothing."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    detail = differences(_defining(read_config_json(path)), defining_values(config))
    if detail:
        raise ConfigConflict(
            f"{path} records another config for this run ({detail}); use another "
            f"--workdir for a new run (--config.init_from={workdir} starts it from this "
            f"run's weights), or the recorded value(s) to continue it")


def differences(recorded: dict, current: dict) -> str:
    """'key=THERE there, HERE here' for every key whose value differs; '' when none does."""
    different = sorted(k for k in set(recorded) | set(current)
                       if recorded.get(k, "<unset>") != current.get(k, "<unset>"))
    return ", ".join(f"{k}={recorded.get(k, '<unset>')!r} there, "
                     f"{current.get(k, '<unset>')!r} here" for k in different)


def record_config(workdir: str, config, write: bool = True) -> None:
    """`check_config`, then `write_config`."""
    check_config(workdir, config)
    if write:
        write_config(workdir, config)


def write_config(workdir: str, config) -> None:
    """Writes WORKDIR/config.json unless it already holds exactly `config`."""
    path, current = os.path.join(workdir, CONFIG_FILE), resolved(config)
    if os.path.exists(path) and read_config_json(path) == current:
        return
    write_atomically(path, json.dumps(current, indent=2, sort_keys=True) + "\n")


def read_config_json(path: str) -> dict:
    try:
        with open(path) as f:
            values = json.load(f)
    except ValueError as error:
        raise UserError(f"{path} is not valid JSON ({error}); restore it or start a new "
                        f"workdir") from None
    if not isinstance(values, dict):
        raise UserError(f"{path} is not a config (a JSON object)")
    return values


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run was started with, on top of today's defaults (keys added to
    the package since fill in with their defaults)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isdir(workdir):
        raise NotARun(f"workdir {workdir} does not exist")
    if not os.path.exists(path):
        raise NotARun(f"{workdir} has no {CONFIG_FILE}: not the workdir of a run (or of a "
                      f"run started before runs recorded their config)")
    return config_from_values(read_config_json(path))


def config_from_values(values: dict) -> ml_collections.ConfigDict:
    """Today's default config with the recorded `values` (a config.json's) on top."""
    from resnet_jax.configs import default

    config = default.get_config()
    for key, value in values.items():
        if key in config:
            config[key] = tuple(value) if isinstance(value, list) else value
    return config


def write_class_names(workdir: str, class_names) -> None:
    write_atomically(os.path.join(workdir, CLASSES_FILE),
                      "".join(f"{name}\n" for name in class_names))


def read_class_names(workdir: str) -> tuple[str, ...] | None:
    path = os.path.join(workdir, CLASSES_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return tuple(line.rstrip("\n") for line in f if line.strip())


def write_record(workdir: str, name: str, record: dict) -> None:
    """WORKDIR/NAME, a small JSON record of the run (weights.json: where the weights `init_from`
    named came from; early_stopping.json: why and where the run stopped early)."""
    write_atomically(os.path.join(workdir, name), json.dumps(record, indent=2) + "\n")


def read_record(workdir: str, name: str) -> dict | None:
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError:
        raise UserError(f"{path} is not JSON; remove it (the run rewrites it)") from None


def write_skipped_images(workdir: str, skipped) -> None:
    """WORKDIR/skipped_images.txt: the files skip_bad_images left out, one "path: why" a line
    (removed when there are none)."""
    path = os.path.join(workdir, SKIPPED_FILE)
    if skipped:
        write_atomically(path, "".join(f"{line}\n" for line in skipped))
    elif os.path.exists(path):
        os.remove(path)
