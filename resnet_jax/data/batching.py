"""Batches for training and evaluation, from any `Source` (every split has random access).

Training: the stream of examples is the concatenation of epochs, epoch e a permutation of the
training set that depends only on (seed, e); global step s holds stream positions
[s*B, (s+1)*B), and process p of P fetches, decodes and batches only its contiguous share
[s*B + p*B/P, s*B + (p+1)*B/P). So the global batches depend only on (seed, B), never on P;
the P processes read each record once per epoch between them; and starting at step s costs
the same as starting at step 0 (positions are computed, nothing before them is read).
Evaluation: every example exactly once, in a fixed order, the last global batch padded with
`mask == False` examples; each process fetches only its share of each global batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from resnet_jax.data.datasets import Records, Source
from resnet_jax.data.lazy_tf import tf

# Positions fetched per call to `Records.fetch` (at least one local batch): big enough that the
# per-call overhead vanishes, small enough that the first batch comes at once.
_FETCH_CHUNK = 1024


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the training set in `epoch`."""
    return np.random.default_rng([seed, epoch]).permutation(n)


# Repeated augmentation (torchvision's RASampler, --ra-sampler --ra-reps R): an epoch is the
# first `epoch_length` entries of the permutation with each index repeated R times in a row,
# a multiple of 256 as there (so about 1/R of the images, each R times, differently
# augmented). Within each block of R*m positions (m = 256 // R) the R copies of an image are m
# positions apart, as RASampler deals consecutive copies to different GPUs: a batch holds
# them in different places and mixup/cutmix's neighbour is another image.
RA_BLOCK = 256


def epoch_length(num_train: int, repetitions: int = 1) -> int:
    """Training examples (stream positions) per epoch."""
    if repetitions == 1 or num_train < RA_BLOCK:
        return num_train
    return num_train // RA_BLOCK * RA_BLOCK


def _repeated_offsets(offsets: np.ndarray, repetitions: int, length: int) -> np.ndarray:
    """Epoch offsets -> index into the permutation (RASampler's order, block-transposed; a
    tail shorter than a block keeps its order)."""
    if repetitions == 1:
        return offsets
    per_copy = RA_BLOCK // repetitions
    block = repetitions * per_copy
    start, within = np.divmod(offsets, block)
    copy, image = np.divmod(within, per_copy)
    repeated = np.where(offsets < length // block * block,
                        start * block + copy + repetitions * image, offsets)
    return repeated // repetitions


def _local_positions(steps: np.ndarray, global_batch: int, process_index: int,
                     process_count: int) -> np.ndarray:
    """This process's stream positions in global steps `steps`, in order."""
    local = global_batch // process_count
    first = steps[:, None] * global_batch + process_index * local
    return (first + np.arange(local)).reshape(-1)


def train_positions(num_train: int, seed: int, global_batch: int, start_step: int,
                    num_steps: int, process_index: int = 0, process_count: int = 1,
                    repetitions: int = 1):
    """Yields (stream positions, training-set indices) of this process's share of steps
    `start_step .. start_step+num_steps-1`, a chunk at a time (`repetitions` > 1: repeated
    augmentation, see `epoch_length`)."""
    length = epoch_length(num_train, repetitions)
    local = global_batch // process_count
    steps_per_chunk = max(1, _FETCH_CHUNK // local)
    permutations: dict[int, np.ndarray] = {}  # the epochs the current chunk touches
    for first in range(start_step, start_step + num_steps, steps_per_chunk):
        steps = np.arange(first, min(first + steps_per_chunk, start_step + num_steps),
                          dtype=np.int64)
        positions = _local_positions(steps, global_batch, process_index, process_count)
        epochs, offsets = np.divmod(positions, length)
        offsets = _repeated_offsets(offsets, repetitions, length)
        permutations = {e: permutations.get(e) if e in permutations
                        else epoch_permutation(seed, int(e), num_train)
                        for e in np.unique(epochs).tolist()}
        indices = np.empty_like(positions)
        for epoch, permutation in permutations.items():
            here = epochs == epoch
            indices[here] = permutation[offsets[here]]
        yield positions, indices


def _fetched(records: Records, chunks) -> tf.data.Dataset:
    """{"position", raw example fields} for each (positions, indices) chunk of `chunks()`,
    fetched from `records` chunk by chunk, one element per example."""
    def generate():
        for positions, indices in chunks():
            yield {"position": positions, **records.fetch(indices)}

    signature = {"position": tf.TensorSpec((None,), tf.int64)}
    signature.update({key: tf.TensorSpec((None, *spec.shape), spec.dtype)
                      for key, spec in records.spec.items()})
    # prefetch: the next chunk is fetched while this one is decoded.
    return tf.data.Dataset.from_generator(generate, output_signature=signature) \
        .prefetch(1).unbatch()


def _without_position(example: dict) -> dict:
    return {key: value for key, value in example.items() if key != "position"}


def train_batches(source: Source, global_batch: int, start_step: int, num_steps: int, seed: int,
                  process_index: int = 0, process_count: int = 1,
                  repetitions: int = 1) -> Iterator[dict]:
    """This process's share of global training batches `start_step .. start_step+num_steps-1`."""
    ds = _fetched(source.train, lambda: train_positions(
        source.info.num_train, seed, global_batch, start_step, num_steps, process_index,
        process_count, repetitions))
    ds = ds.map(lambda example: source.preprocess_train(
        _without_position(example), tf.stack([tf.constant(seed, tf.int64), example["position"]])),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(global_batch // process_count, drop_remainder=True)
    return _numpy_batches(ds.prefetch(2), source)


def num_eval_batches(source: Source, global_batch: int) -> int:
    return math.ceil(source.info.num_eval / global_batch)


def eval_batches(source: Source, global_batch: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
    """Every eval example once, fixed order; the last global batch padded with mask=False."""
    num_batches = num_eval_batches(source, global_batch)
    positions = _local_positions(np.arange(num_batches, dtype=np.int64), global_batch,
                                 process_index, process_count)
    real = positions[positions < source.info.num_eval]  # the padding is at the end
    padding = len(positions) - len(real)

    def chunks():
        for first in range(0, len(real), _FETCH_CHUNK):
            yield real[first:first + _FETCH_CHUNK], real[first:first + _FETCH_CHUNK]

    ds = _fetched(source.eval, chunks).map(
        lambda example: source.preprocess_eval(_without_position(example)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    image_dtype = ds.element_spec["image"].dtype  # as preprocessed: float32, or uint8 pixels
    label_dtype = tf.as_dtype(source.info.label_dtype)  # class indices, or multi-hot rows
    label_shape = ds.element_spec["label"].shape
    ds = ds.map(lambda ex: {"image": ex["image"], "label": tf.cast(ex["label"], label_dtype),
                            "mask": True})
    pad = {"image": tf.zeros(source.info.eval_shape, image_dtype),
           "label": tf.zeros(label_shape, label_dtype), "mask": False}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat(padding))
    ds = ds.batch(global_batch // process_count, drop_remainder=True)
    return _numpy_batches(ds.prefetch(2), source)


def _numpy_batches(ds, source: Source) -> Iterator[dict]:
    try:
        for batch in ds.as_numpy_iterator():
            batch["label"] = batch["label"].astype(source.info.label_dtype, copy=False)
            yield batch
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
            tf.errors.PermissionDeniedError) as error:  # an image that cannot be decoded or read
        explained = source.explain_read_error and source.explain_read_error(error)
        if explained is None:
            raise
        raise explained from None
