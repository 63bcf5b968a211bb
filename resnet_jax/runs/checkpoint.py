"""Orbax checkpoints in WORKDIR/checkpoints: the TrainState plus a small JSON description.

The description (model, classes, dataset, batch size) lets a run refuse a workdir that holds
another model's checkpoints before it touches anything. Saving is asynchronous and atomic
(Orbax writes a temporary directory and renames it when complete); the data position is the
step itself (see `data.batching`), so it travels inside the state. A damaged checkpoint (a
truncated, zeroed or missing file) falls back to the previous one.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import sys
import traceback

import jax
import numpy as np
import orbax.checkpoint as ocp

from resnet_jax.errors import StorageError, UserError


class CheckpointMismatch(UserError):
    """The workdir holds checkpoints of another run: another model, dataset or config."""


LATEST_DIR, BEST_DIR = "checkpoints", "best"  # in WORKDIR: the last few, and the best one


def create_manager(workdir: str, keep: int, directory: str = LATEST_DIR) -> ocp.CheckpointManager:
    """Keeps the last `keep` checkpoints; saves whenever asked (the training loop decides when).
    `directory=BEST_DIR`: the best checkpoint's own manager (keep=1), apart from the pruning of
    the latest ones."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
        enable_async_checkpointing=True, create=True)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, directory)),
                                 options=options)


def best_record(workdir: str) -> dict | None:
    """The best checkpoint's record, {"step", "metric", "value"}, or None if the run has none
    (or it cannot be read: the next evaluation saves another)."""
    directory = os.path.abspath(os.path.join(workdir, BEST_DIR))
    if not os.path.isdir(directory):
        return None
    with _quiet_failed_reads():
        manager = ocp.CheckpointManager(directory,
                                        options=ocp.CheckpointManagerOptions(read_only=True))
        step = manager.latest_step()
        if step is None:
            return None
        try:
            meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception:  # noqa: BLE001 -- a damaged best checkpoint is replaced, not fatal
            return None
    best = dict(meta["meta"]).get("best")
    return None if best is None else {"step": step, **best}


def resolve_step(workdir: str, which: str = "auto") -> tuple[str, int]:
    """(directory, step) of the checkpoint `which` names: "best", "latest", a step number, or
    "auto" (the best where the run has one, else the latest). UserError if there is none."""
    best = best_record(workdir) if which in ("auto", "best") else None
    if which == "auto":
        which = "best" if best is not None else "latest"
    if which == "best":
        if best is None:
            raise UserError(f"{workdir} has no best checkpoint (it is kept by runs that evaluate "
                            f"during training: eval_every_epochs or eval_every_steps); use "
                            f"--checkpoint latest")
        return BEST_DIR, best["step"]
    steps = _finished_steps(workdir)
    if which == "latest":
        if not steps:
            raise UserError(f"{workdir} has no checkpoint yet: train first (or wait for the "
                            f"first checkpoint)")
        return LATEST_DIR, max(steps)
    if not which.isdigit() or int(which) not in steps:
        raise UserError(f"--checkpoint {which}: give best, latest or one of the steps "
                        f"{workdir} keeps ({', '.join(map(str, sorted(steps))) or 'none'})")
    return LATEST_DIR, int(which)


def describe(config, class_names) -> dict:
    """What must match for a checkpoint to be resumed by this config: every value that defines
    the run (`records.defining_values`), the class count and the class names in their order (an
    output unit's meaning). Each checkpoint carries it, so a resume is checked against the
    checkpoint itself, whatever became of config.json or classes.txt."""
    from resnet_jax.runs import records

    return {**records.defining_values(config), "num_classes": len(class_names),
            "class_names": [str(name) for name in class_names]}


def recorded_class_names(workdir: str, directory: str, step: int) -> tuple[str, ...] | None:
    """The class names the checkpoint at `step` carries; None for one written before
    checkpoints carried them (or whose description cannot be read)."""
    path = os.path.join(workdir, directory, str(step), "meta", "metadata")
    try:
        with open(path) as f:
            names = json.load(f).get("class_names")
    except (OSError, ValueError, AttributeError):
        return None
    return tuple(names) if isinstance(names, list) else None


# What Orbax writes a checkpoint into before it renames it (STEP.orbax-checkpoint-tmp[-N]).
UNFINISHED_MARK = ".orbax-checkpoint-tmp"


def _finished_steps(workdir: str) -> list[int]:
    """The steps of the finished checkpoints in WORKDIR/checkpoints (its STEP folders)."""
    directory = os.path.join(workdir, LATEST_DIR)
    if not os.path.isdir(directory):
        return []
    return [int(name) for name in os.listdir(directory) if name.isdigit()]


def has_checkpoints(workdir: str) -> bool:
    """Whether WORKDIR/checkpoints holds a finished checkpoint (a STEP folder)."""
    return bool(_finished_steps(workdir))


def remove_unfinished(workdir: str) -> None:
    """Removes checkpoints a stopped run left half-written (a second Ctrl-C, kill -9 during a
    save), with a line each; the run holds the workdir's lock, so no save is under way."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return
    for name in sorted(os.listdir(directory)):
        if UNFINISHED_MARK in name:
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
            print(f"warning: removed {os.path.join(directory, name)}: a checkpoint left "
                  f"unfinished by an earlier run", file=sys.stderr, flush=True)


def save(manager: ocp.CheckpointManager, step: int, state, description: dict,
         interval_sums: dict | None = None, metrics_rows: list | None = None) -> None:
    """Saves `state` at `step` (asynchronously). `interval_sums`: the metric sums of the steps
    since the last metrics row, so that a resumed run writes the same rows as one that was not
    interrupted; `metrics_rows`: metrics.jsonl's rows up to `step`, from which a lost or cut
    metrics.jsonl is rebuilt."""
    meta = dict(description)
    if interval_sums is not None:
        meta["interval_sums"] = {k: v.item() for k, v in interval_sums.items()}
    if metrics_rows is not None:
        meta["metrics_rows"] = metrics_rows
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)), force=True)


def restore_latest(workdir: str, manager: ocp.CheckpointManager, keep: int, abstract_state,
                   description: dict):
    """The newest checkpoint that can be read, as (manager, step, state, interval_sums,
    metrics_rows), or (manager, None, None, None, None) if there is none (metrics_rows is None
    for checkpoints written before they held them).

    A checkpoint that cannot be read is reported in one line and moved out of the way, to
    WORKDIR/damaged_checkpoints/STEP (never deleted), once an older one has been read; if none
    can be read, StorageError and nothing is moved. A checkpoint of another run (another model,
    dataset, ...) raises CheckpointMismatch naming its metadata file.
    """
    with _quiet_failed_reads():
        return _restore_latest(workdir, manager, keep, abstract_state, description)


def _restore_latest(workdir, manager, keep, abstract_state, description):
    damaged = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta = dict(meta["meta"])
        except Exception as error:  # noqa: BLE001 -- whatever Orbax or the files raise
            damaged.append(_report_damaged(manager, step, "meta", error))
            continue
        _check_compatible(meta, description, _item_path(manager, step, "meta"))
        try:
            state = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state)))["state"]
        except Exception as error:  # noqa: BLE001
            damaged.append(_report_damaged(manager, step, "state", error))
            continue
        if damaged:
            manager = _move_aside(workdir, manager, damaged, keep)
        sums = meta.get("interval_sums")
        sums = None if sums is None else {k: _sum_array(v) for k, v in sums.items()}
        return manager, step, state, sums, meta.get("metrics_rows")
    if damaged:
        raise StorageError(
            f"no checkpoint in {manager.directory} can be read (steps "
            f"{', '.join(map(str, damaged))}); nothing was changed. Move the checkpoints "
            f"directory away to train from scratch, or restore it from a copy")
    return manager, None, None, None, None


def _sum_array(value: int | float) -> np.ndarray:
    """An interval sum as the step made it: the integer counts (of non-finite steps) int32, as
    JSON kept them integers; every other sum float32."""
    return np.asarray(value, np.int32 if isinstance(value, int) else np.float32)


def _item_path(manager, step: int, item: str) -> str:
    return os.path.join(str(manager.directory), str(step), item)


def _check_compatible(saved: dict, description: dict, path: str) -> None:
    # Keys the checkpoint does not carry are not compared: checkpoints written before it carried
    # the whole run-defining config hold model, dataset, shortcut, batch size and classes.
    different = {k: (saved[k], v) for k, v in description.items()
                 if k in saved and saved[k] != v}  # metrics_rows, interval_sums: not in it
    if "class_names" in different and "num_classes" not in different:
        saved_names, names = different["class_names"]
        index = next(i for i, (a, b) in enumerate(zip(saved_names, names)) if a != b)
        moved = saved_names[index]
        elsewhere = (f"; the data has {moved!r} as class {names.index(moved)}"
                     if moved in names else "")
        raise CheckpointMismatch(
            f"{os.path.dirname(os.path.dirname(path))} was trained with class "
            f"{index} = {saved_names[index]!r}; the data now calls it {names[index]!r}"
            f"{elsewhere}: an output unit would change its meaning. Rename the class back (the "
            f"run's classes are in its classes.txt), or use another --workdir (with "
            f"--config.init_from=THIS_WORKDIR to start from its weights)")
    if different:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}"
                           for k, (a, b) in sorted(different.items()))
        raise CheckpointMismatch(
            f"{os.path.dirname(os.path.dirname(path))} holds checkpoints of another run or "
            f"config ({detail}; read from {os.path.join(path, 'metadata')}); use another "
            f"--workdir, or the checkpoint's value(s) to continue it")


@contextlib.contextmanager
def _quiet_failed_reads():
    """When one read of a damaged checkpoint fails, Orbax abandons its other reads: each then
    reports itself ('Event loop is closed', 'Exception ignored in <coroutine>', asyncio's 'exception
    was never retrieved'), a traceback apiece, hundreds in all, after the one error that
    `restore_latest` reports. Those reports are dropped while checkpoints are read."""
    previous = sys.unraisablehook
    loggers = {name: logging.getLogger(name) for name in ("asyncio", "absl")}
    levels = {name: logger.level for name, logger in loggers.items()}
    sys.unraisablehook = lambda unraisable: None
    for logger in loggers.values():  # absl: Orbax's warning about a missing metadata file
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        gc.collect()  # finalizes the abandoned reads now, while their reports are dropped
        sys.unraisablehook = previous
        for name, logger in loggers.items():
            logger.setLevel(levels[name])


def _report_damaged(manager, step: int, item: str, error: Exception) -> int:
    reason = (str(error).strip().splitlines() or [""])[0].split(" See full TensorStore")[0]
    reason = reason if len(reason) <= 160 else reason[:157] + "..."
    print(f"warning: checkpoint {step} cannot be read ({_item_path(manager, step, item)}: "
          f"{type(error).__name__}: {reason}); trying the previous one", file=sys.stderr,
          flush=True)
    return step


def _move_aside(workdir: str, manager, steps, keep: int) -> ocp.CheckpointManager:
    """Moves damaged step directories to WORKDIR/damaged_checkpoints (process 0; the others
    wait), so that the run can save those steps again; returns a manager that no longer sees
    them."""
    target = os.path.join(workdir, "damaged_checkpoints")
    if jax.process_index() == 0:
        os.makedirs(target, exist_ok=True)
        for step in steps:
            destination = os.path.join(target, f"{step}")
            suffix = 1
            while os.path.exists(destination):
                destination, suffix = os.path.join(target, f"{step}.{suffix}"), suffix + 1
            os.replace(os.path.join(str(manager.directory), str(step)), destination)
            print(f"warning: moved damaged checkpoint {step} to {destination}",
                  file=sys.stderr, flush=True)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("resnet_jax: damaged checkpoints moved")
    manager.close()
    return create_manager(workdir, keep)


def load_state(workdir: str, step: int | None = None, directory: str = LATEST_DIR,
               only: tuple[str, ...] | None = None) -> dict:
    """The saved TrainState of `workdir` (latest step by default; `directory=BEST_DIR`: the
    best checkpoint) as a plain pytree of arrays, without building a model: for inspection,
    export and tests. `only`: just those top-level entries (a model for inference needs
    "params", "batch_stats" and "step", half the bytes: no optimiser state)."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # Orbax's notes on read-only managers and items unread
    try:
        return _load_state(workdir, step, directory, only)
    finally:
        absl_logger.setLevel(level)


def _load_state(workdir: str, step: int | None, directory: str,
                only: tuple[str, ...] | None) -> dict:
    registry = ocp.DefaultCheckpointHandlerRegistry()
    if only is None:
        registry.add("state", ocp.args.StandardRestore, ocp.StandardCheckpointHandler())
    else:
        registry.add("state", ocp.args.PyTreeRestore, ocp.PyTreeCheckpointHandler())
    manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, directory)),
                                    options=ocp.CheckpointManagerOptions(read_only=True),
                                    handler_registry=registry)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {workdir}/{directory}")
    metadata = manager.item_metadata(step)["state"]
    metadata = getattr(metadata, "tree", metadata)
    if only is not None:
        metadata = {key: metadata[key] for key in only}
    # Restore onto this process's first device, whatever topology wrote the checkpoint.
    device = jax.sharding.make_single_device_sharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
    if only is None:
        args = ocp.args.StandardRestore(target)
    else:
        restore_args = jax.tree_util.tree_map(
            lambda m: ocp.ArrayRestoreArgs(sharding=device, global_shape=m.shape, dtype=m.dtype),
            target)
        args = ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True)
    return manager.restore(step, args=ocp.args.Composite(state=args))["state"]


def _abandoned_io_report(unraisable) -> bool:
    """Whether an "exception ignored" report comes from I/O that Orbax abandoned after another
    of its reads or writes failed (that failure is raised, and reported, on its own)."""
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return True
    frames = traceback.extract_tb(unraisable.exc_traceback) if unraisable.exc_traceback else []
    return any(f"{os.sep}orbax{os.sep}" in frame.filename for frame in frames)


class _SecondaryReports(logging.Filter):
    """Drops log records that repeat a checkpoint failure raised in the main thread: the errors
    Orbax's background threads log (traceback and all) and asyncio's 'exception was never
    retrieved' for the reads and writes Orbax abandoned."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if f"{os.sep}orbax{os.sep}" in (record.pathname or ""):
            return False
        return not (record.name == "asyncio"
                    and "exception was never retrieved" in record.getMessage())


def report_errors_once() -> None:
    """For command-line tools: a failed checkpoint write or read is reported once, by the
    exception the main thread raises, not by every thread and abandoned write it touched."""
    for name in ("absl", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _SecondaryReports) for f in logger.filters):
            logger.addFilter(_SecondaryReports())
    previous = sys.unraisablehook
    if getattr(previous, "_drops_abandoned_io", False):
        return

    def hook(unraisable):
        if not _abandoned_io_report(unraisable):
            previous(unraisable)

    hook._drops_abandoned_io = True
    sys.unraisablehook = hook
