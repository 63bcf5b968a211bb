"""Batches for training and evaluation: each process's share of every global batch, in an order
that depends only on (seed, global batch size), resumable at any step; every eval example exactly
once, the last batch padded with masked examples."""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from resnet_jax.data.datasets import Source
from resnet_jax.data.lazy_tf import tf

def _process_slice(ds, global_batch: int, process_index: int, process_count: int):
    """Keeps this process's contiguous share of each global batch (before any decoding)."""
    local = global_batch // process_count
    if process_count == 1:
        return ds
    return ds.filter(lambda position, _: (position % global_batch) // local == process_index)


def train_batches(source: Source, global_batch: int, start_step: int, num_steps: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """This process's share of global training batches `start_step .. start_step+num_steps-1`."""
    n = source.info.num_train
    first_position = start_step * global_batch
    last_position = (start_step + num_steps) * global_batch
    first_epoch, skip = divmod(first_position, n)
    last_epoch = math.ceil(last_position / n)
    ds = source.train_epoch(first_epoch).skip(skip)
    for epoch in range(first_epoch + 1, last_epoch):
        ds = ds.concatenate(source.train_epoch(epoch))
    ds = tf.data.Dataset.zip(tf.data.Dataset.range(first_position, last_position), ds)
    ds = _process_slice(ds, global_batch, process_index, process_count)
    ds = ds.map(lambda position, example: source.preprocess_train(
        example, tf.stack([tf.constant(seed, tf.int64), position])),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(global_batch // process_count, drop_remainder=True)
    return _numpy_batches(ds.prefetch(2), source)


def num_eval_batches(source: Source, global_batch: int) -> int:
    return math.ceil(source.info.num_eval / global_batch)


def eval_batches(source: Source, global_batch: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
    """Every eval example once, fixed order; the last global batch padded with mask=False."""
    num_batches = num_eval_batches(source, global_batch)
    padding = num_batches * global_batch - source.info.num_eval
    ds = source.eval_examples().map(source.preprocess_eval, num_parallel_calls=tf.data.AUTOTUNE,
                                    deterministic=True)
    image_dtype = ds.element_spec["image"].dtype  # as preprocessed: float32, or uint8 pixels
    ds = ds.map(lambda ex: {"image": ex["image"], "label": tf.cast(ex["label"], tf.int32),
                            "mask": True})
    pad = {"image": tf.zeros(source.info.image_shape, image_dtype),
           "label": tf.constant(0, tf.int32), "mask": False}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat(padding))
    ds = tf.data.Dataset.zip(tf.data.Dataset.range(num_batches * global_batch), ds)
    ds = _process_slice(ds, global_batch, process_index, process_count).map(lambda _, ex: ex)
    ds = ds.batch(global_batch // process_count, drop_remainder=True)
    return _numpy_batches(ds.prefetch(2), source)


def _numpy_batches(ds, source: Source) -> Iterator[dict]:
    try:
        for batch in ds.as_numpy_iterator():
            batch["label"] = batch["label"].astype(np.int32, copy=False)
            yield batch
    except tf.errors.InvalidArgumentError as error:  # e.g. an image file that cannot be decoded
        explained = source.explain_read_error and source.explain_read_error(error)
        if explained is None:
            raise
        raise explained from None
