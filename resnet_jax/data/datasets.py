"""Datasets: digits, fake, CIFAR-10/100, ImageNet, Imagenette, image folders, each a `Source`
whose splits are `Records` with random access (fetch any example by index), and its
preprocessing. `resnet_jax.data.batching` turns them into each process's batches.

Every split is random access, so the input contract (`batching`) is one for every dataset:
- the training stream is the concatenation of epochs; epoch e's order is a permutation that is
  a pure function of (seed, e), so every example appears exactly once per epoch;
- global training step s holds stream positions [s*B, (s+1)*B); process p of P fetches only the
  p-th slice of each global batch: P processes read each record once per epoch between them;
- resuming at step s fetches from position s*B on: no record before it is read;
- random augmentations are stateless, seeded by (seed, stream position).
Evaluation visits every example exactly once, in a fixed order, padded to whole global batches
with `mask == False` examples.

Large datasets (imagenet2012, imagenette) are read from TFDS's ArrayRecord files
(`tfds.data_source`); image folders from their files, one file a record; the small datasets
from memory.

Images arrive normalised (float32), except from image files (ImageNet, Imagenette, folders): their
batches hold uint8 pixels and `DatasetInfo.pixel_normalization` says how the train and eval steps
normalise them on the device, which keeps host work and host-to-device bytes 4x smaller.
TensorFlow runs on the CPU only, imported on first use (`resnet_jax.data.lazy_tf`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from resnet_jax.data import autoaugment, folders, preprocessing
from resnet_jax.data.lazy_tf import tf, tfds
from resnet_jax.data.preprocessing import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    pad_crop_flip,
)
from resnet_jax.data.spec import DataSpec
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
    eval_image_shape: tuple[int, int, int] | None = None  # None: image_shape
    # Several labels per image: labels are (classes,) float32 multi-hot rows, not class indices
    multilabel: bool = False
    skipped: tuple[str, ...] = ()  # skip_bad_images: "path: why" of each file left out
    class_counts: tuple[int, ...] | None = None  # training images per class, where known

    @property
    def label_dtype(self) -> str:
        """A batch's labels: class indices (int32), or multi-hot rows (float32)."""
        return "float32" if self.multilabel else "int32"

    @property
    def eval_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the evaluation images (the eval crop can differ from the train crop)."""
        return self.eval_image_shape or self.image_shape


@dataclasses.dataclass(frozen=True)
class Records:
    """One split with random access: `fetch(indices)` reads exactly those examples (raw: JPEG
    bytes, a path, an array row), as {field: numpy array, one row per index, in order}."""

    count: int
    fetch: Callable[[np.ndarray], dict[str, np.ndarray]]
    spec: dict[str, tf.TensorSpec]  # one raw example's fields

    @classmethod
    def of_arrays(cls, **arrays: np.ndarray) -> Records:
        """Records held in memory: rows of equally long arrays."""
        spec = {key: tf.TensorSpec(value.shape[1:], tf.string if value.dtype == object
                                   else tf.as_dtype(value.dtype))
                for key, value in arrays.items()}
        count = len(next(iter(arrays.values())))
        return cls(count, lambda indices: {key: value[indices] for key, value in arrays.items()},
                   spec)


@dataclasses.dataclass(frozen=True)
class Source:
    """A dataset: its splits with random access, and how to preprocess their raw examples."""

    info: DatasetInfo
    train: Records
    eval: Records
    preprocess_train: Callable  # (raw example, stateless seed) -> {"image", "label"}
    preprocess_eval: Callable   # raw example -> {"image", "label"}
    # A tf.data error raised while reading -> a UserError naming the file (or None: a bug).
    explain_read_error: Callable[[Exception], Exception | None] | None = None


# --- sources --------------------------------------------------------------------------------

def _in_memory(name, train, evaluation, num_classes, class_names, image_shape,
               preprocess_train, preprocess_eval) -> Source:
    """A dataset held in memory as (images, labels) numpy arrays."""
    splits = [Records.of_arrays(image=images, label=labels.astype(np.int32))
              for images, labels in (train, evaluation)]
    info = DatasetInfo(name, num_classes, splits[0].count, splits[1].count, image_shape,
                       tuple(class_names), class_counts=_counts(train[1], num_classes))
    return Source(info, *splits, preprocess_train, preprocess_eval)


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


def _arrays_eval_split(spec, name: str) -> None:
    if spec.eval_split not in ("", "test"):
        raise DataError(f"{name} has one held-out split; eval_split={spec.eval_split!r} "
                        f"must be '' or 'test'")


def _digits(spec: DataSpec) -> Source:
    _arrays_eval_split(spec, "digits")
    train, evaluation = digits_arrays()
    mean, std = float(train[0].mean()), float(train[0].std())

    def preprocess_train(example, rng):
        # Digits are not mirror-symmetric: shifts by up to one pixel, no flips.
        image = pad_crop_flip(example["image"], rng, pad=1, flip=False)
        return {"image": (image - mean) / std, "label": example["label"]}

    def preprocess_eval(example):
        return {"image": (example["image"] - mean) / std, "label": example["label"]}

    return _in_memory("digits", train, evaluation, 10, [str(i) for i in range(10)], (8, 8, 1),
                      preprocess_train, preprocess_eval)


def _fake(spec: DataSpec) -> Source:
    """Random uint8 pixels, normalised on the device as (x - 128) / 64 (values -2..2)."""
    _arrays_eval_split(spec, "fake")
    size, num_classes, n = spec.image_size, spec.fake_num_classes, spec.fake_num_examples
    seed = spec.seed  # the images' content
    shape = (size, size, 3)

    def example(index):
        image = tf.random.stateless_uniform(shape, seed=tf.stack([seed, index]), maxval=256,
                                            dtype=tf.int32)
        return {"image": tf.cast(image, tf.uint8),
                "label": tf.cast(index % num_classes, tf.int32)}

    num_eval = max(n // 4, 1)
    info = DatasetInfo("fake", num_classes, n, num_eval, shape,
                       tuple(str(i) for i in range(num_classes)),
                       pixel_normalization=((128.0,) * 3, (64.0,) * 3))
    # An example is its id: eval ids follow the training ones.
    return Source(info, Records.of_arrays(index=np.arange(n)),
                  Records.of_arrays(index=np.arange(n, n + num_eval)),
                  lambda ex, rng: example(ex["index"]), lambda ex: example(ex["index"]))


# TFDS datasets read by index (ArrayRecord); the others are loaded into memory.
RANDOM_ACCESS_TFDS = ("imagenet2012", "imagenette")
TFDS_DATASETS = ("cifar10", "cifar100", *RANDOM_ACCESS_TFDS)


def _prepare_command(name: str, data_dir: str | None) -> str:
    return "python -m resnet_jax.data.prepare " + name + (f" --data_dir {data_dir}"
                                                          if data_dir else "")


def prepared_builder(name: str, data_dir: str | None):
    """The TFDS builder of `name`, prepared; DataError at once if it is not, with the command
    that prepares it (training never downloads: TFDS's own download retries the network for
    minutes where there is none)."""
    data_dir = data_dir or None  # "" means TFDS's default
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    where = data_dir or tfds.core.constants.DATA_DIR
    build = _prepare_command(name, data_dir)
    how = (f"put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
           f"{where}/downloads/manual, then run `{build}`"
           if name == "imagenet2012" else
           f"run `{build}` (on a machine with network access, "
           f"then copy {where}/{name} here), or pass --config.data_dir")
    raise DataError(f"dataset {name} is not prepared in {where}: {how}")


def _cifar(spec: DataSpec, name) -> Source:
    builder = prepared_builder(name, spec.data_dir)
    arrays = []
    for split in ("train", spec.eval_split or "test"):
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
        return {"image": preprocessing.normalize(example["image"], mean, std),
                "label": example["label"]}

    return _in_memory(name, arrays[0], arrays[1], num_classes, names, (32, 32, 3),
                      preprocess_train, preprocess_eval)


def _tfds_records(builder, split: str, name: str, data_dir: str) -> Records:
    """A TFDS split read by index from its ArrayRecord files; images stay JPEG bytes."""
    try:
        source = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
    except NotImplementedError:  # prepared as TFRecord only: readable in sequence, not by index
        raise DataError(
            f"dataset {name} in {builder.data_dir} is stored as TFRecord, which has no random "
            f"access; convert it once with `{_prepare_command(name, data_dir)}` (adds "
            f"ArrayRecord files beside the TFRecord ones)") from None

    def fetch(indices):
        examples = source.__getitems__(indices.tolist())
        return {"image": np.array([example["image"] for example in examples], dtype=object),
                "label": np.array([example["label"] for example in examples], np.int32)}

    return Records(len(source), fetch, {"image": tf.TensorSpec((), tf.string),
                                        "label": tf.TensorSpec((), tf.int32)})


def _tfds_jpeg(spec: DataSpec, name) -> Source:
    """Datasets too large for memory (ImageNet, Imagenette): TFDS ArrayRecord files, JPEG bytes
    fetched by index and decoded per example."""
    builder = prepared_builder(name, spec.data_dir)
    eval_split = spec.eval_split or "validation"
    num_classes = builder.info.features["label"].num_classes
    size, resize, eval_size = spec.image_size, spec.eval_resize, spec.eval_crop
    train, evaluation = (_tfds_records(builder, split, name, spec.data_dir)
                         for split in ("train", eval_split))

    def preprocess_train(example, rng):
        seeds = tf.random.experimental.stateless_split(rng, 2)
        image = preprocessing.to_pixels(preprocessing.inception_crop(
            example["image"], seeds[0], size, spec.crop_min_area))
        if spec.random_flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        return {"image": image, "label": example["label"]}

    def preprocess_eval(example):
        return {"image": preprocessing.eval_pixels(example["image"], eval_size, resize),
                "label": example["label"]}

    info = DatasetInfo(name, num_classes, train.count, evaluation.count, (size, size, 3),
                       tuple(builder.info.features["label"].names),
                       pixel_normalization=(IMAGENET_MEAN, IMAGENET_STD), eval_from=eval_split,
                       eval_image_shape=(eval_size, eval_size, 3))
    return Source(info, train, evaluation, preprocess_train, preprocess_eval)


def _folder(spec: DataSpec) -> Source:
    """Image files in class folders (`resnet_jax.data.folders`), one file a record, ImageNet
    preprocessing."""
    splits = folders.read_splits(spec.data_dir, spec.holdout_fraction, spec.eval_split,
                                 spec.max_image_pixels, check=not spec.skip_bad_images)
    return _image_files(spec, "folder", splits.class_names, splits.eval_from,
                        (splits.train.paths, np.asarray(splits.train.labels, np.int32)),
                        (splits.eval.paths, np.asarray(splits.eval.labels, np.int32)))


def _multilabel(spec: DataSpec) -> Source:
    """Image files with several labels each, listed in DIR/train.csv and DIR/val.csv
    (`resnet_jax.data.multilabel`); labels are multi-hot rows."""
    from resnet_jax.data import multilabel

    splits = multilabel.read_splits(spec.data_dir)
    if not spec.skip_bad_images:
        folders.check_headers(splits.train.paths + splits.eval.paths, spec.max_image_pixels)
    return _image_files(spec, "multilabel", splits.class_names, splits.eval_from,
                        (splits.train.paths, splits.targets(splits.train)),
                        (splits.eval.paths, splits.targets(splits.eval)), multilabel=True)


def _image_files(spec, name, class_names, eval_from, train_split, eval_split,
                 multilabel=False) -> Source:
    """(paths, labels) for training and evaluation, one file a record, ImageNet
    preprocessing."""
    size, resize, eval_size = spec.image_size, spec.eval_resize, spec.eval_crop
    skipped = ()
    if spec.skip_bad_images:
        train_split, eval_split, skipped = folders.without_unreadable(
            train_split, eval_split, spec.max_image_pixels)
    train, evaluation = (Records.of_arrays(path=np.array(paths, dtype=object), label=labels)
                         for paths, labels in (train_split, eval_split))
    every_path = list(train_split[0]) + list(eval_split[0])

    def preprocess_train(example, rng):
        seeds = tf.random.experimental.stateless_split(rng, 2)
        image = preprocessing.decode_rgb(tf.io.read_file(example["path"]))
        image = preprocessing.to_pixels(preprocessing.random_resized_crop(
            image, seeds[0], size, spec.crop_min_area))
        if spec.random_flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        return {"image": tf.ensure_shape(image, (size, size, 3)), "label": example["label"]}

    def preprocess_eval(example):
        image = preprocessing.eval_pixels(tf.io.read_file(example["path"]), eval_size, resize)
        return {"image": image, "label": example["label"]}

    def explain_read_error(error):
        found = folders.find_undecodable(every_path)
        if found is None:
            return None
        return folders.FolderError(f"cannot read image {found[0]}: {found[1]}; fix or remove "
                                   f"the file")

    info = DatasetInfo(name, len(class_names), train.count, evaluation.count,
                       (size, size, 3), tuple(class_names),
                       pixel_normalization=(IMAGENET_MEAN, IMAGENET_STD),
                       eval_from=eval_from, eval_image_shape=(eval_size, eval_size, 3),
                       multilabel=multilabel, skipped=skipped,
                       class_counts=_counts(train_split[1], len(class_names)))
    return Source(info, train, evaluation, preprocess_train, preprocess_eval,
                  explain_read_error=explain_read_error)


def _counts(labels, num_classes: int) -> tuple[int, ...]:
    """Images per class: of class indices, or of multi-hot rows (an image counts for each)."""
    labels = np.asarray(labels)
    counts = labels.sum(axis=0) if labels.ndim == 2 else np.bincount(
        labels.astype(np.int64), minlength=num_classes)
    return tuple(int(n) for n in counts)


_SOURCES: dict[str, Callable] = {
    "digits": _digits,
    "cifar10": lambda spec: _cifar(spec, "cifar10"),
    "cifar100": lambda spec: _cifar(spec, "cifar100"),
    "imagenet2012": lambda spec: _tfds_jpeg(spec, "imagenet2012"),
    "imagenette": lambda spec: _tfds_jpeg(spec, "imagenette"),
    "fake": _fake,
    "folder": _folder,
    "multilabel": _multilabel,
}


DATASETS = tuple(_SOURCES)
# Datasets of image files, preprocessed with random-resized crops and resize + center crop.
FILE_DATASETS = ("folder", "multilabel", "imagenet2012", "imagenette")
# The user's own images: their classes are whatever the folders or CSV lists name.
OWN_DATASETS = ("folder", "multilabel")


def check_dataset(name: str) -> None:
    """DataError naming the valid datasets, for a name that has no source."""
    if name not in _SOURCES:
        raise DataError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")


def create_source(spec: DataSpec) -> Source:
    """The dataset `spec` names, with its preprocessing; DataError if it is unknown or not
    prepared."""
    check_dataset(spec.dataset)
    autoaugment.check_policy(spec.auto_augment)
    source = _SOURCES[spec.dataset](spec)
    if not spec.auto_augment:
        return source
    if source.info.pixel_normalization is None:
        raise DataError(f"auto_augment works on uint8 pixels: image files (folder, "
                        f"imagenet2012, imagenette) or fake data, not {spec.dataset}")
    return dataclasses.replace(source, preprocess_train=autoaugment.after(
        source.preprocess_train, spec.auto_augment, spec.ra_num_ops, spec.ra_magnitude))
