"""Input pipelines: digits, fake, CIFAR-10/100, ImageNet, Imagenette, image folders -> host-local
numpy batches.

Determinism, so that a resumed run sees exactly the batches of an uninterrupted one:
- the training stream is the concatenation of epochs; epoch e's order is a pure function of
  (seed, e), and every example appears exactly once per epoch (batches may straddle epochs);
- global training step s holds stream positions [s*B, (s+1)*B); process p of P takes the p-th
  slice of each global batch, so any process count sees the same global batches;
- random augmentations are stateless, seeded by (seed, stream position).
Evaluation visits every example exactly once, in a fixed order, padded to whole global batches
with `mask == False` examples.

Images arrive normalised (float32), except from image files (ImageNet, Imagenette, folders): their
batches hold uint8 pixels and `DatasetInfo.pixel_normalization` says how the train and eval steps
normalise them on the device, which keeps host work and host-to-device bytes 4x smaller.

TensorFlow runs on the CPU only, imported on first use (`resnet_jax.data.lazy_tf`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from resnet_jax.data import folders, preprocessing
from resnet_jax.data.lazy_tf import tf, tfds
from resnet_jax.data.preprocessing import (CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD,
                                           CIFAR100_MEAN, CIFAR100_STD,
                                           IMAGENET_MEAN, IMAGENET_STD, pad_crop_flip)
from resnet_jax.errors import UserError

DIGITS_EVAL_EXAMPLES = 360  # the fixed stratified held-out split (20% of 1,797)


class DataError(UserError):
    """A dataset that is unknown, or not prepared and not downloadable."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    num_train: int
    num_eval: int
    image_shape: tuple[int, int, int]  # (H, W, C) that the model sees
    class_names: tuple[str, ...]
    # None: batches hold normalised float32 images. (mean, std) per channel: batches hold uint8
    # pixels, normalised by the steps on the device as (pixels - mean) / std.
    pixel_normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    eval_from: str = ""  # the split or folder evaluated


@dataclasses.dataclass(frozen=True)
class Source:
    """A dataset: its examples in a given epoch's order, in eval order, and how to preprocess."""

    info: DatasetInfo
    train_epoch: Callable[[int], tf.data.Dataset]   # epoch -> raw examples, that epoch's order
    eval_examples: Callable[[], tf.data.Dataset]    # raw examples, fixed order
    preprocess_train: Callable  # (raw example, stateless seed) -> {"image", "label"}
    preprocess_eval: Callable   # raw example -> {"image", "label"}
    # A tf.data error raised while reading -> a UserError naming the file (or None: a bug).
    explain_read_error: Callable[[Exception], Exception | None] | None = None



# --- sources --------------------------------------------------------------------------------

def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def _in_memory(name, train, evaluation, num_classes, class_names, image_shape, seed,
               preprocess_train, preprocess_eval) -> Source:
    """A dataset held in memory as numpy arrays: epochs are index permutations."""
    train_images, train_labels = train
    eval_images, eval_labels = evaluation
    train_images_t = tf.constant(train_images)
    train_labels_t = tf.constant(train_labels.astype(np.int32))

    def train_epoch(epoch):
        order = _epoch_permutation(seed, epoch, len(train_labels))
        return tf.data.Dataset.from_tensor_slices(order).map(
            lambda i: {"image": tf.gather(train_images_t, i), "label": tf.gather(train_labels_t, i)})

    def eval_examples():
        return tf.data.Dataset.from_tensor_slices(
            {"image": eval_images, "label": eval_labels.astype(np.int32)})

    info = DatasetInfo(name, num_classes, len(train_labels), len(eval_labels), image_shape,
                       tuple(class_names))
    return Source(info, train_epoch, eval_examples, preprocess_train, preprocess_eval)


def digits_arrays():
    """scikit-learn's digits (1,797 8x8 images) with the fixed stratified held-out split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[..., None]  # (N, 8, 8, 1), values 0..16
    train_x, eval_x, train_y, eval_y = train_test_split(
        images, digits.target, test_size=DIGITS_EVAL_EXAMPLES, stratify=digits.target,
        random_state=0)
    return (train_x, train_y), (eval_x, eval_y)


def _arrays_eval_split(config, name: str) -> None:
    if config.eval_split not in ("", "test"):
        raise DataError(f"{name} has one held-out split; eval_split={config.eval_split!r} "
                        f"must be '' or 'test'")


def _digits(config, seed) -> Source:
    _arrays_eval_split(config, "digits")
    train, evaluation = digits_arrays()
    mean, std = float(train[0].mean()), float(train[0].std())

    def preprocess_train(example, rng):
        # Digits are not mirror-symmetric: shifts by up to one pixel, no flips.
        image = pad_crop_flip(example["image"], rng, pad=1, flip=False)
        return {"image": (image - mean) / std, "label": example["label"]}

    def preprocess_eval(example):
        return {"image": (example["image"] - mean) / std, "label": example["label"]}

    return _in_memory("digits", train, evaluation, 10, [str(i) for i in range(10)], (8, 8, 1),
                      seed, preprocess_train, preprocess_eval)


def _fake(config, seed) -> Source:
    _arrays_eval_split(config, "fake")
    size, num_classes, n = config.image_size, config.fake_num_classes, config.fake_num_examples
    shape = (size, size, 3)

    def example(index):
        image = tf.random.stateless_uniform(shape, seed=tf.stack([seed, index]), maxval=256,
                                            dtype=tf.int32)
        return {"image": tf.cast(image, tf.float32) / 64.0 - 2.0,
                "label": tf.cast(index % num_classes, tf.int32)}

    def train_epoch(epoch):
        order = _epoch_permutation(seed, epoch, n).astype(np.int64)
        return tf.data.Dataset.from_tensor_slices(order).map(example)

    def eval_examples():
        return tf.data.Dataset.range(n, n + max(n // 4, 1)).map(example)

    info = DatasetInfo("fake", num_classes, n, max(n // 4, 1), shape,
                       tuple(str(i) for i in range(num_classes)))
    return Source(info, train_epoch, eval_examples, lambda ex, rng: ex, lambda ex: ex)


def prepared_builder(name: str, data_dir: str | None):
    """The TFDS builder of `name`, prepared; DataError at once if it is not, with the command
    that prepares it (training never downloads: TFDS's own download retries the network for
    minutes where there is none)."""
    data_dir = data_dir or None  # "" means TFDS's default
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    where = data_dir or tfds.core.constants.DATA_DIR
    how = (f"put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
           f"{where}/downloads/manual, then run `tfds build {name} --data_dir {where}`"
           if name == "imagenet2012" else
           f"run `tfds build {name} --data_dir {where}` (on a machine with network access, "
           f"then copy {where}/{name} here), or pass --config.data_dir")
    raise DataError(f"dataset {name} is not prepared in {where}: {how}")


def _cifar(config, seed, name) -> Source:
    builder = prepared_builder(name, config.data_dir)
    arrays = []
    for split in ("train", config.eval_split or "test"):
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False).batch(4096)
        images, labels = zip(*tfds.as_numpy(ds))
        arrays.append((np.concatenate(images).astype(np.uint8),
                       np.concatenate(labels).astype(np.int64)))
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN,
                                                                        CIFAR100_STD)
    num_classes = builder.info.features["label"].num_classes
    names = builder.info.features["label"].names
    if name == "cifar10" and names == [str(i) for i in range(10)]:
        names = CIFAR10_CLASSES

    def preprocess_train(example, rng):
        image = pad_crop_flip(example["image"], rng, pad=4, flip=True)
        return {"image": preprocessing.normalize(image, mean, std), "label": example["label"]}

    def preprocess_eval(example):
        return {"image": preprocessing.normalize(example["image"], mean, std), "label": example["label"]}

    return _in_memory(name, arrays[0], arrays[1], num_classes, names, (32, 32, 3), seed,
                      preprocess_train, preprocess_eval)


def _streamed_jpeg(config, seed, name) -> Source:
    """Datasets too large for memory (ImageNet): TFDS records, JPEG bytes decoded per example.

    Epoch e reads the files in an order seeded by (seed, e) through a seeded shuffle buffer:
    deterministic, but only as random as the buffer allows (the usual ImageNet compromise).
    """
    builder = prepared_builder(name, config.data_dir)
    eval_split = config.eval_split or "validation"
    num_classes = builder.info.features["label"].num_classes
    size, resize = config.image_size, config.eval_resize
    decoders = {"image": tfds.decode.SkipDecoding()}
    options = tf.data.Options()
    options.deterministic = True

    def train_epoch(epoch):
        epoch_seed = int(np.random.default_rng([seed, epoch]).integers(2**31))
        read_config = tfds.ReadConfig(shuffle_seed=epoch_seed, options=options)
        ds = builder.as_dataset(split="train", shuffle_files=True, decoders=decoders,
                                read_config=read_config)
        return ds.shuffle(config.shuffle_buffer, seed=epoch_seed,
                          reshuffle_each_iteration=False)

    def eval_examples():
        return builder.as_dataset(split=eval_split, shuffle_files=False, decoders=decoders,
                                  read_config=tfds.ReadConfig(options=options))

    def preprocess_train(example, rng):
        seeds = tf.random.experimental.stateless_split(rng, 2)
        image = preprocessing.to_pixels(preprocessing.inception_crop(
            example["image"], seeds[0], size, config.crop_min_area))
        if config.random_flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        return {"image": image, "label": tf.cast(example["label"], tf.int32)}

    def preprocess_eval(example):
        image = preprocessing.eval_pixels(example["image"], size, resize)
        return {"image": image, "label": tf.cast(example["label"], tf.int32)}

    info = DatasetInfo(name, num_classes, _num_examples(builder, "train", decoders),
                       _num_examples(builder, eval_split, decoders), (size, size, 3),
                       tuple(builder.info.features["label"].names),
                       pixel_normalization=(IMAGENET_MEAN, IMAGENET_STD), eval_from=eval_split)
    return Source(info, train_epoch, eval_examples, preprocess_train, preprocess_eval)


def _folder(config, seed) -> Source:
    """Image files in class folders (`resnet_jax.data.folders`), ImageNet preprocessing."""
    splits = folders.read_splits(config.data_dir, config.holdout_fraction, config.eval_split)
    size, resize = config.image_size, config.eval_resize
    train, evaluation = splits.train, splits.eval

    def read(paths, labels):
        return lambda index: {"path": tf.gather(paths, index), "label": tf.gather(labels, index)}

    train_paths, train_labels = tf.constant(train.paths), tf.constant(train.labels)

    def train_epoch(epoch):
        order = _epoch_permutation(seed, epoch, len(train.paths))
        return tf.data.Dataset.from_tensor_slices(order).map(read(train_paths, train_labels))

    def eval_examples():
        return tf.data.Dataset.from_tensor_slices({"path": list(evaluation.paths),
                                                   "label": evaluation.labels})

    def preprocess_train(example, rng):
        seeds = tf.random.experimental.stateless_split(rng, 2)
        image = preprocessing.decode_rgb(tf.io.read_file(example["path"]))
        image = preprocessing.to_pixels(preprocessing.random_resized_crop(
            image, seeds[0], size, config.crop_min_area))
        if config.random_flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        return {"image": tf.ensure_shape(image, (size, size, 3)), "label": example["label"]}

    def preprocess_eval(example):
        image = preprocessing.eval_pixels(tf.io.read_file(example["path"]), size, resize)
        return {"image": image, "label": tf.cast(example["label"], tf.int32)}

    def explain_read_error(error):
        found = folders.find_undecodable(train.paths + evaluation.paths)
        if found is None:
            return None
        return folders.FolderError(f"cannot read image {found[0]}: {found[1]}; fix or remove "
                                   f"the file")

    info = DatasetInfo("folder", len(splits.class_names), len(train.paths),
                       len(evaluation.paths), (size, size, 3), splits.class_names,
                       pixel_normalization=(IMAGENET_MEAN, IMAGENET_STD),
                       eval_from=splits.eval_from)
    return Source(info, train_epoch, eval_examples, preprocess_train, preprocess_eval,
                  explain_read_error=explain_read_error)


def _num_examples(builder, split: str, decoders) -> int:
    """From the dataset's metadata; counted when there is none (e.g. under TFDS mocking)."""
    try:
        return builder.info.splits[split].num_examples
    except KeyError:
        ds = builder.as_dataset(split=split, decoders=decoders)
        return int(ds.reduce(0, lambda count, _: count + 1))


_SOURCES: dict[str, Callable] = {
    "digits": _digits,
    "cifar10": lambda config, seed: _cifar(config, seed, "cifar10"),
    "cifar100": lambda config, seed: _cifar(config, seed, "cifar100"),
    "imagenet2012": lambda config, seed: _streamed_jpeg(config, seed, "imagenet2012"),
    "imagenette": lambda config, seed: _streamed_jpeg(config, seed, "imagenette"),
    "fake": _fake,
    "folder": _folder,
}


DATASETS = tuple(_SOURCES)


def check_dataset(name: str) -> None:
    """DataError naming the valid datasets, for a name that has no source."""
    if name not in _SOURCES:
        raise DataError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")


def create_source(config) -> Source:
    check_dataset(config.dataset)
    return _SOURCES[config.dataset](config, config.seed)
