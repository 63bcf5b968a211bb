"""Orbax checkpoints in WORKDIR/checkpoints: the TrainState plus a small JSON description.

The description (model, classes, dataset, batch size) lets a run refuse a workdir that holds
another model's checkpoints before it touches anything. Saving is asynchronous; the data
position is the step itself (see `input_pipeline`), so it travels inside the state.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from resnet_jax.errors import UserError


class CheckpointMismatch(UserError):
    """The workdir holds checkpoints of a different model or dataset."""


def create_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
    """Keeps the last `keep` checkpoints; saves whenever asked (the training loop decides when)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                           create=True)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                 options=options)


def describe(config, num_classes: int) -> dict:
    """What must match for a checkpoint to be resumed by this config."""
    return {"model": config.model, "num_classes": num_classes, "dataset": config.dataset,
            "shortcut": config.shortcut, "batch_size": config.batch_size}


def check_compatible(manager: ocp.CheckpointManager, description: dict) -> int | None:
    """The latest step, after checking that its description matches; None if there is none."""
    step = manager.latest_step()
    if step is None:
        return None
    saved = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    different = {k: (saved.get(k), v) for k, v in description.items() if saved.get(k) != v}
    if different:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}"
                           for k, (a, b) in different.items())
        raise CheckpointMismatch(
            f"{manager.directory} holds checkpoints of another run ({detail}); use another "
            f"--workdir or match the config")
    return step


def save(manager: ocp.CheckpointManager, step: int, state, description: dict,
         force: bool = False) -> None:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(description)),
                 force=force)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state):
    """Restores `step` into the shardings of `abstract_state` (any device count)."""
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    return restored["state"]


def load_state(workdir: str, step: int | None = None) -> dict:
    """The saved TrainState of `workdir` (latest step by default) as a plain pytree of arrays,
    without building a model: for inspection, export and tests."""
    manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                    options=ocp.CheckpointManagerOptions(read_only=True),
                                    item_handlers={"state": ocp.StandardCheckpointHandler()})
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
    metadata = manager.item_metadata(step)["state"]
    metadata = getattr(metadata, "tree", metadata)
    # Restore onto this process's first device, whatever topology wrote the checkpoint.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))
    return restored["state"]
