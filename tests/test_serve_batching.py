"""The single-process service's batching, without a model: concurrent requests share forward
passes, each gets its own row back, none waits past its batch, a batch runs the part that
fills a shape and carries the rest, a failure reaches every waiter of its batch, and stopping
runs what is queued."""

import asyncio
import threading
import time

import numpy as np
import pytest

from resnet_jax.serve.batching import Batcher, running


def _recording_forward(sizes, delay_s=0.0):
    def forward(pixels):  # each image's "outputs": its own value, and it doubled
        sizes.append(len(pixels))
        time.sleep(delay_s)
        return pixels[:, 0] * 1, pixels[:, 0] * 2
    return forward


def _each_request_gets_its_own_rows(batcher, count: int) -> None:
    """`count` requests submitted at once: request i gets the rows of its own image, i and 2i."""
    async def main():
        async with running(batcher):
            return await asyncio.gather(*(batcher.submit(np.array([i], np.int64))
                                          for i in range(count)))

    results = asyncio.run(main())
    assert [(int(a), int(b)) for a, b in results] == [(i, 2 * i) for i in range(count)]


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    sizes = []
    batcher = Batcher(_recording_forward(sizes, 0.02), max_batch_size=16, max_delay_s=0.05)

    _each_request_gets_its_own_rows(batcher, 40)
    assert sum(sizes) == 40 and max(sizes) <= 16
    assert len(sizes) <= 4  # 40 at once: batches of 16, 16, 8 (a late one at most)


def test_a_lone_request_waits_no_longer_than_the_delay():
    sizes = []
    batcher = Batcher(_recording_forward(sizes), max_batch_size=16, max_delay_s=0.05)

    async def main():
        async with running(batcher):
            started = time.monotonic()
            await batcher.submit(np.array([7], np.int64))
            return time.monotonic() - started

    assert asyncio.run(main()) < 1.0 and sizes == [1]


def test_a_failing_batch_fails_each_of_its_requests_and_the_next_batch_runs():
    calls = []

    def forward(pixels):
        calls.append(len(pixels))
        if len(calls) == 1:
            raise RuntimeError("device fault")
        return (pixels[:, 0],)

    batcher = Batcher(forward, max_batch_size=4, max_delay_s=0.05)

    async def main():
        async with running(batcher):
            first = await asyncio.gather(*(batcher.submit(np.array([i])) for i in range(3)),
                                         return_exceptions=True)
            second = await batcher.submit(np.array([9]))
            return first, second

    first, second = asyncio.run(main())
    assert all(isinstance(e, RuntimeError) for e in first)
    assert int(second[0]) == 9


def test_stopping_runs_what_is_queued():
    sizes, release = [], threading.Event()

    def forward(pixels):
        release.wait(5)
        sizes.append(len(pixels))
        return (pixels[:, 0],)

    batcher = Batcher(forward, max_batch_size=2, max_delay_s=0.0)

    async def main():
        batcher.start()
        waiting = [asyncio.ensure_future(batcher.submit(np.array([i]))) for i in range(5)]
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(batcher.stop())
        release.set()
        await stopping
        return [int(w.result()[0]) for w in waiting]

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    assert sum(sizes) == 5


@pytest.mark.parametrize("limit,shapes", [(1, (1,)), (16, (1, 2, 4, 8, 16)),
                                          (20, (1, 2, 4, 8, 16, 20)),
                                          (6, (1, 2, 4, 6))])
def test_batch_shapes_double_up_to_the_limit(limit, shapes):
    from resnet_jax.serve.engine import batch_shapes_up_to

    assert batch_shapes_up_to(limit) == shapes


@pytest.mark.parametrize("gathered,run", [(1, 1), (3, 3), (5, 4), (6, 4), (7, 7), (8, 8),
                                          (9, 8), (12, 8), (13, 8), (14, 14), (16, 16),
                                          (40, 16)])
def test_a_batch_runs_what_fills_a_shape_and_pads_only_a_little(gathered, run):
    from resnet_jax.serve.engine import images_to_run

    assert images_to_run(gathered, (1, 2, 4, 8, 16)) == run


def test_the_images_not_run_open_the_next_batch_and_all_get_their_rows():
    sizes = []
    batcher = Batcher(_recording_forward(sizes), max_batch_size=16, max_delay_s=0.05,
                      take=lambda gathered: min(gathered, 4))

    _each_request_gets_its_own_rows(batcher, 10)
    assert sizes == [4, 4, 2]
