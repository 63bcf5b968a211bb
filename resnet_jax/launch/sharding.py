"""Device mesh, shardings and host-to-device batch placement (the pjit style, no pmap).

One mesh axis, `data`: batches are split over it, parameters and optimizer state replicated.
Under `jax.jit` with these shardings XLA inserts the all-reduces, so batch-norm statistics are
over the global batch without any `axis_name`.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def create_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def to_global(batch: dict, mesh: Mesh) -> dict:
    """Host-local numpy batch (this process's share) -> global arrays sharded on `data`."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def prefetch_to_mesh(batches: Iterator[dict], mesh: Mesh, size: int = 2) -> Iterator[dict]:
    """Keeps `size` batches in flight to the devices, so steps never wait on the transfer."""
    queue = collections.deque()
    for batch in batches:
        queue.append(to_global(batch, mesh))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
