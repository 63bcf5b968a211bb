"""A run's model on a device for serving: one forward pass that gives every image's logits and
its embedding together, compiled ahead of time for a few fixed batch shapes.

A batch of n images runs padded to the smallest compiled shape that holds it, so the service
never compiles after start-up (`compilations` counts JAX's lowerings, for /metrics and the
tests). The outputs equal predict.py's logits and embed.py's embeddings for the same files:
the same preprocessing (`InputContract.decode`), the same eval-mode network.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax.errors import UserError
from resnet_jax.models import kernels
from resnet_jax.models.inputs import normalize_images
from resnet_jax.models.resnet import POOLED
from resnet_jax.retrieval.search import unit_rows
from resnet_jax.runs.inference import RunModel

# Every lowering of a jitted function to XLA, a cache hit or not: a new batch shape, a new
# function. Counted process-wide (JAX's monitoring events have no per-function filter).
_LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_lowerings = 0
_lock = threading.Lock()


def _count(event: str, duration_s: float, **_) -> None:
    global _lowerings
    if event == _LOWERING_EVENT:
        with _lock:
            _lowerings += 1


jax.monitoring.register_event_duration_secs_listener(_count)


def compilations() -> int:
    """How many computations this process has lowered for XLA so far."""
    return _lowerings


def batch_shapes_up_to(max_batch_size: int) -> tuple[int, ...]:
    """1, 2, 4, 8, ... (powers of 2) below `max_batch_size`, and `max_batch_size` itself: a
    request alone pads to nothing, a batch to less than twice its size. Powers of 4 compile
    fewer shapes, but a batch of 6 padded to 16 spends 10/16 of its forward pass on padding:
    measured on 2 cores, 16 clients gathered into batches of ~8 and ran at half the images/s
    of full batches (benchmarks/2026-12-07-serve)."""
    if max_batch_size < 1:
        raise UserError(f"--max_batch_size must be >= 1, got {max_batch_size}")
    shapes, size = [], 1
    while size < max_batch_size:
        shapes.append(size)
        size *= 2
    return (*shapes, max_batch_size)


def images_to_run(gathered: int, batch_shapes: Sequence[int]) -> int:
    """How many of `gathered` images to run in one forward pass: all of them where padding
    them to a batch shape adds at most one image (or an eighth of the shape), else the largest
    shape they fill; the rest wait for the next pass, with what arrives meanwhile. Padding
    computes images nobody asked for: 16 clients on 2 cores gathered ~12 and ~4 images in turn,
    and padding 12 to 16 cost a quarter of every large pass (tools/serve_load.py: 56 -> 74
    images/s once it ran 8 and carried 4)."""
    fitting = next((s for s in batch_shapes if s >= gathered), None)
    if fitting is None:
        return max(batch_shapes)
    if fitting - gathered <= max(1, fitting // 8):
        return gathered
    return max((s for s in batch_shapes if s <= gathered), default=gathered)


class Engine:
    """`forward(pixels)`: uint8 images (n, H, W, 3) -> (logits (n, C), unit embeddings (n, D)),
    float32 host arrays, for any n up to the largest batch shape."""

    def __init__(self, run: RunModel, batch_shapes: Sequence[int]):
        self.run = run
        self.batch_shapes = tuple(sorted(set(batch_shapes)))
        if not self.batch_shapes or self.batch_shapes[0] < 1:
            raise UserError(f"batch shapes must be >= 1, got {tuple(batch_shapes)}")
        model, normalization = run.model, run.contract.normalization

        def forward(variables, images):  # (B, H, W, 3) uint8
            logits, state = model.apply(variables, normalize_images(images, normalization),
                                        train=False, mutable=[POOLED[0]])
            pooled = state[POOLED[0]][POOLED[1]][0].astype(jnp.float32)  # (B, D)
            return logits.astype(jnp.float32), unit_rows(pooled)

        self._jitted = jax.jit(forward)
        self._variables = jax.device_put(  # once, not per call
            kernels.for_inference(model, run.variables, run.image_shape))
        self._compiled = {}  # batch size -> its compiled forward pass

    @property
    def max_batch_size(self) -> int:
        return self.batch_shapes[-1]

    @property
    def ready(self) -> bool:
        return len(self._compiled) == len(self.batch_shapes)

    def compile(self, progress=None) -> None:
        """Compiles the forward pass for every batch shape (the persistent compilation cache,
        where the run's config names one, makes a second start fast), and runs each once."""
        for size in self.batch_shapes:
            images = jax.ShapeDtypeStruct((size, *self.run.image_shape), jnp.uint8)
            compiled = self._jitted.lower(self._variables, images).compile()
            jax.block_until_ready(compiled(self._variables,
                                           np.zeros((size, *self.run.image_shape), np.uint8)))
            self._compiled[size] = compiled
            if progress is not None:
                progress(size)

    def images_to_run(self, gathered: int) -> int:
        return images_to_run(gathered, self.batch_shapes)

    def forward(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = len(pixels)
        size = next((s for s in self.batch_shapes if s >= count), None)
        if size is None or size not in self._compiled:
            raise RuntimeError(f"no compiled forward pass holds a batch of {count} "
                               f"(compiled: {sorted(self._compiled)})")
        padded = np.zeros((size, *pixels.shape[1:]), np.uint8)
        padded[:count] = pixels
        logits, embeddings = self._compiled[size](self._variables, padded)
        return np.asarray(logits)[:count], np.asarray(embeddings)[:count]
