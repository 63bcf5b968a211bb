"""Pod-scale input on a real ArrayRecord dataset of JPEG records: each of P processes reads
(counted at the ArrayRecord reader) exactly its share of every epoch, the P shares are each
record once, the global batches do not depend on P, and a resumed run reads nothing before its
position and continues with exactly the uninterrupted run's batches."""

import collections
import contextlib
from unittest import mock

import numpy as np
import pytest
from array_record.python import array_record_data_source

from resnet_jax.configs import default
from resnet_jax.data import batching, datasets, synthetic
from resnet_jax.plan import data_spec

NUM_RECORDS = 2000
GLOBAL_BATCH = 40  # 50 steps an epoch; divisible by 1, 2 and 4 processes
STEPS_PER_EPOCH = NUM_RECORDS // GLOBAL_BATCH


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("jpeg_records")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (8 + i % 5, 12, 3), dtype=np.uint8)
              for i in range(NUM_RECORDS)]
    synthetic.write_jpeg_dataset(str(data_dir), {"train": images,
                                                          "validation": images[:30]})
    config = default.get_config()
    config.update(dataset="imagenette", data_dir=str(data_dir), image_size=8, eval_resize=8)
    return datasets.create_source(data_spec(config))


@contextlib.contextmanager
def counted_reads():
    """Counts every record the ArrayRecord readers fetch, by record index."""
    reader = array_record_data_source.ArrayRecordDataSource
    counts = collections.Counter()
    read_many, read_one = reader.__getitems__, reader.__getitem__

    def count_many(self, keys):
        counts.update(int(key) for key in keys)
        return read_many(self, keys)

    def count_one(self, key):
        counts[int(key)] += 1
        return read_one(self, key)

    with mock.patch.object(reader, "__getitems__", count_many), \
            mock.patch.object(reader, "__getitem__", count_one):
        yield counts


@pytest.mark.parametrize("processes", [1, 2, 4])
def test_each_process_reads_only_its_share_and_together_every_record_once(source, processes):
    assert source.info.num_train == NUM_RECORDS
    union = collections.Counter()
    for process in range(processes):
        with counted_reads() as reads:
            batches = list(batching.train_batches(source, GLOBAL_BATCH, 0, STEPS_PER_EPOCH,
                                                  seed=0, process_index=process,
                                                  process_count=processes))
        assert len(batches) == STEPS_PER_EPOCH
        assert batches[0]["image"].shape == (GLOBAL_BATCH // processes, 8, 8, 3)
        assert sum(reads.values()) == NUM_RECORDS // processes
        union.update(reads)
    assert union == collections.Counter(range(NUM_RECORDS))


def _stacked(batches):
    return {key: np.stack([b[key] for b in batches]) for key in ("image", "label")}


def test_global_batches_do_not_depend_on_processes_and_resume_continues_them(source):
    # Steps 46..53 straddle the first epoch boundary.
    full = list(batching.train_batches(source, GLOBAL_BATCH, 46, 8, seed=3))
    shares = [list(batching.train_batches(source, GLOBAL_BATCH, 46, 8, 3, p, 2)) for p in (0, 1)]
    for key in ("image", "label"):
        joined = np.concatenate([_stacked(shares[0])[key], _stacked(shares[1])[key]], axis=1)
        np.testing.assert_array_equal(joined, _stacked(full)[key])
    with counted_reads() as reads:
        resumed = list(batching.train_batches(source, GLOBAL_BATCH, 50, 4, seed=3))
    assert sum(reads.values()) == 4 * GLOBAL_BATCH  # nothing before step 50 is read
    for key in ("image", "label"):
        np.testing.assert_array_equal(_stacked(resumed)[key], _stacked(full[4:])[key])
    # The decoded batches are the records the epoch permutation puts there.
    order = batching.epoch_permutation(3, 1, NUM_RECORDS)[:4 * GLOBAL_BATCH]
    assert sorted(reads) == sorted(order.tolist())


def test_evaluation_reads_each_eval_record_once_between_the_processes(source):
    union = collections.Counter()
    for process in range(2):
        with counted_reads() as reads:
            batches = list(batching.eval_batches(source, 8, process, 2))
        assert sum(int(b["mask"].sum()) for b in batches) == sum(reads.values())
        union.update(reads)
    assert union == collections.Counter(range(30))
