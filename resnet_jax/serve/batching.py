"""Dynamic batching for the single-process service: concurrent requests gathered into one
forward pass on the device.

The first image waiting opens a batch; it closes when `max_batch_size` images are in it or
`max_delay_s` after it opened, whichever comes first, and runs on one worker thread while the
event loop goes on accepting (and the next batch fills). Where `take` says so, only part of
what was gathered runs (a batch shape filled, not a larger one mostly padding); the rest opens
the next batch at once. On Ray Serve, `@serve.batch` does this
job instead (`serve.ray_app`); both call the same `Engine.forward`.

Why not a library's batcher here: LitServe's owns the server and runs the model in worker
processes, one API per path, where the three endpoints here share one forward pass, one
gallery in memory and one compiled model; Ray Serve's needs a Ray runtime. What this module
does is the part they share: a queue, a deadline, futures.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable

import numpy as np


class Batcher:
    def __init__(self, forward: Callable[[np.ndarray], tuple[np.ndarray, ...]],
                 max_batch_size: int, max_delay_s: float, on_batch: Callable[[int], None]
                 = lambda size: None, take: Callable[[int], int] = lambda gathered: gathered):
        self._forward = forward
        # how many of the images gathered to run now (`Engine.images_to_run`); the others
        # open the next batch
        self._take = take
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self._on_batch = on_batch  # the metrics' batch-size histogram
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        # one thread: the device runs one batch at a time, and the next one fills meanwhile
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "resnet-jax-batch")

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, pixels: np.ndarray) -> tuple[np.ndarray, ...]:
        """One image's outputs (each output's row for it), once its batch has run."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((pixels, future))
        return await future

    async def stop(self) -> None:
        """Runs what is queued, then stops the worker."""
        if self._worker is None:
            return
        await self._queue.put(None)
        await self._worker
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping, carried = False, []
        while carried or not stopping:
            if carried:  # they waited through a forward pass already: add what is queued
                batch, deadline = carried, time.monotonic()
            else:
                first = await self._queue.get()
                if first is None:
                    break
                batch, deadline = [first], time.monotonic() + self.max_delay_s
            while len(batch) < self.max_batch_size and not stopping:
                timeout = deadline - time.monotonic()
                try:
                    item = (self._queue.get_nowait() if timeout <= 0 else
                            await asyncio.wait_for(self._queue.get(), timeout))
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                if item is None:  # stop after what is gathered
                    stopping = True
                    break
                batch.append(item)
            count = len(batch) if stopping else self._take(len(batch))
            carried = batch[count:]
            await self._run_batch(loop, batch[:count])

    async def _run_batch(self, loop, batch) -> None:
        pixels = np.stack([p for p, _ in batch])
        self._on_batch(len(batch))
        try:
            outputs = await loop.run_in_executor(self._executor, self._forward, pixels)
        except Exception as error:  # a bug: every waiting request gets it (a 500)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for i, (_, future) in enumerate(batch):
            if not future.done():  # its client may have gone away
                future.set_result(tuple(output[i] for output in outputs))


@contextlib.asynccontextmanager
async def running(batcher: Batcher):
    batcher.start()
    try:
        yield batcher
    finally:
        await batcher.stop()
