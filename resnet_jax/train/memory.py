"""What a run's memory needs, said in one line where it does not fit: XLA's out-of-memory error
on an accelerator, and, on a CPU, the training step's own estimate of the host memory it needs
against what the machine has free, checked before the first step (a 16 GB laptop would
otherwise be swapped to a halt or killed without a word)."""

from __future__ import annotations

import contextlib
import os

import jax

from resnet_jax import errors
from resnet_jax import plan as plans

# Headroom for what XLA's estimate leaves out: the input pipeline's buffers, TensorFlow.
HOST_HEADROOM_BYTES = 1 << 30


def _hint(plan: plans.Plan) -> str:
    return (f"{plan.model.name}, batch_size={plan.loop.batch_size} ("
            f"{plan.loop.batch_size // max(jax.device_count(), 1)} per device, "
            f"{plan.step.accumulation_steps} micro-batch(es)), image_size="
            f"{plan.data.image_size}, dtype {plan.model.dtype}; lower batch_size or "
            f"image_size, or raise grad_accumulation_steps to keep the global batch in smaller "
            f"pieces")


@contextlib.contextmanager
def out_of_memory_explained(plan: plans.Plan):
    """XLA's out-of-memory error (a page of allocator detail) as one line that says what to
    change: a user's batch or image size, not a bug."""
    try:
        yield
    except jax.errors.JaxRuntimeError as error:
        message = str(error)
        if "RESOURCE_EXHAUSTED" not in message and "Out of memory" not in message:
            raise
        device = jax.devices()[0]
        first = message.strip().splitlines()[0][:160]
        raise errors.UserError(f"out of memory on {device.device_kind} ({device.platform}): "
                               f"{_hint(plan)} (XLA: {first})") from None


def available_host_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_host_memory(plan: plans.Plan, compiled_step) -> None:
    """UserError if the compiled training step's buffers (XLA's estimate: its temporaries and
    arguments), with some headroom, exceed the host memory free now; CPU devices only."""
    if jax.devices()[0].platform != "cpu" or os.environ.get("RESNET_JAX_SKIP_MEMORY_CHECK"):
        return
    analysis = compiled_step.memory_analysis()
    available = available_host_bytes()
    if analysis is None or available is None:
        return
    needed = analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
    if needed + HOST_HEADROOM_BYTES > available:
        raise errors.UserError(
            f"the training step needs about {needed / 2**30:.1f} GB of host memory and "
            f"{available / 2**30:.1f} GB are free: {_hint(plan)} (a CPU-sized start: "
            f"--config configs/folder.py:cpu; RESNET_JAX_SKIP_MEMORY_CHECK=1 runs anyway)")
