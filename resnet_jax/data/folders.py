"""Image folders: DIR/train/CLASS/*.jpg (and DIR/val, validation or test) as a dataset source.

The layout of torchvision's `ImageFolder`, timm and Keras: one sub-folder per class, class
names sorted as `ImageFolder` sorts them, so that label i means the same class everywhere.
Without an evaluation folder (only DIR/train, or class folders directly in DIR) a fixed,
stratified `holdout_fraction` of each class is held out for evaluation: the same files whatever
the seed, so a resumed or repeated run evaluates on the same images.

Files are listed here; reading and decoding (JPEG, PNG, BMP, GIF) is tf.data's. A file that
cannot be decoded stops the run with its path named (`find_undecodable`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import unicodedata

import numpy as np

from resnet_jax.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Images larger than this (width x height) are refused: a decompression bomb (a few kB of PNG
# that decodes to gigabytes) would otherwise exhaust the host's memory in the input pipeline.
# PIL's own bomb limit; the config key max_image_pixels changes it.
MAX_IMAGE_PIXELS = 178_956_970
EVAL_FOLDERS = ("val", "validation", "test")


class FolderError(UserError):
    """An image folder that cannot be used: missing, empty, inconsistent classes, bad files."""


@dataclasses.dataclass(frozen=True)
class ImageList:
    paths: tuple[str, ...]
    labels: np.ndarray  # int32, one per path


@dataclasses.dataclass(frozen=True)
class FolderSplits:
    class_names: tuple[str, ...]
    train: ImageList
    eval: ImageList
    eval_from: str  # the folder evaluated, or how the held-out images were chosen


def _image_files(folder: str, ignored: list[str] | None = None) -> list[str]:
    """The image files of `folder`, sorted; other visible files are added to `ignored`."""
    images = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        if name.lower().endswith(IMAGE_EXTENSIONS):
            images.append(path)
        elif ignored is not None:
            ignored.append(path)
    return images


def _class_folders(folder: str) -> list[str]:
    """The class folders of `folder`, sorted: hidden ones (names starting with ".") are
    skipped with a warning that counts them; a name that classes.txt could not record (a
    newline or other control character, or blanks only) is refused."""
    names = sorted(name for name in os.listdir(folder)
                   if os.path.isdir(os.path.join(folder, name)))
    hidden = [name for name in names if name.startswith(".")]
    if hidden:
        print(f"warning: {folder}: skipped {len(hidden)} hidden folder(s) (names starting "
              f"with '.', e.g. {hidden[0]!r}); rename one to make it a class",
              file=sys.stderr, flush=True)
    for name in names:
        if not name.strip() or any(unicodedata.category(c) == "Cc" for c in name):
            raise FolderError(f"class folder {os.path.join(folder, name)!r}: its name holds a "
                              f"control character (a newline?) or only blanks, which the "
                              f"run's classes.txt cannot record; rename the folder")
    return [name for name in names if not name.startswith(".")]


def _read_classes(folder: str, class_names: tuple[str, ...] | None = None) -> tuple:
    """(class names, ImageList) of FOLDER/CLASS/*; with `class_names` given, every class folder
    must be one of them (an evaluation folder's classes are the training folder's)."""
    found = _class_folders(folder)
    if not found:
        raise FolderError(f"{folder} has no class folders: put each class's images in "
                          f"{folder}/CLASS_NAME/ (JPEG, PNG, BMP, GIF, WebP or TIFF)")
    if class_names is None:
        class_names = tuple(found)
    unknown = [name for name in found if name not in class_names]
    if unknown:
        raise FolderError(f"{folder} has class folder(s) {', '.join(map(repr, unknown))} that "
                          f"the training folder does not have (its classes: "
                          f"{', '.join(class_names)})")
    paths, labels, ignored = [], [], []
    for name in found:
        files = _image_files(os.path.join(folder, name), ignored)
        if not files:
            raise FolderError(f"class folder {os.path.join(folder, name)} has no images "
                              f"({', '.join(IMAGE_EXTENSIONS)}); add some or remove it")
        paths += files
        labels += [class_names.index(name)] * len(files)
    if ignored:  # e.g. HEIC photos, which would otherwise vanish without a word
        print(f"warning: {folder}: ignored {len(ignored)} file(s) that are not "
              f"{'/'.join(e[1:].upper() for e in IMAGE_EXTENSIONS)} (e.g. {ignored[0]})",
              file=sys.stderr, flush=True)
    return class_names, ImageList(tuple(paths), np.asarray(labels, np.int32))


def _held_out(images: ImageList, fraction: float) -> tuple[ImageList, ImageList]:
    """(train, eval): from each class, a fixed `fraction` (at least one image of a class that
    has two or more) chosen by a fixed permutation, so the split never depends on the seed."""
    keep, hold = [], []
    for label in np.unique(images.labels):
        members = np.flatnonzero(images.labels == label)
        count = 0 if len(members) < 2 else min(len(members) - 1,
                                               max(1, round(fraction * len(members))))
        order = np.random.default_rng([0, int(label)]).permutation(members)
        hold += sorted(order[:count].tolist())
        keep += sorted(order[count:].tolist())
    pick = lambda idx: ImageList(tuple(images.paths[i] for i in idx),  # noqa: E731
                                 images.labels[np.asarray(idx, np.int64)])
    return pick(sorted(keep)), pick(sorted(hold))


def read_splits(data_dir: str, holdout_fraction: float, eval_split: str = "",
                max_pixels: int = MAX_IMAGE_PIXELS, check: bool = True) -> FolderSplits:
    """The classes and images of DATA_DIR. `eval_split`: the folder to evaluate ('' for the
    first of val/validation/test, or the held-out images; 'train' for the training images).
    `max_pixels`: larger images are refused (see `check_headers`); `check=False` leaves the
    headers to `unreadable` (skip_bad_images)."""
    if not data_dir:
        raise FolderError("dataset=folder needs --config.data_dir=DIR, a folder holding train/ "
                          "(and val/) with one sub-folder of images per class")
    if not os.path.isdir(data_dir):
        raise FolderError(f"data_dir {data_dir} is not a directory")
    train_dir = os.path.join(data_dir, "train")
    if not os.path.isdir(train_dir):
        train_dir = data_dir  # class folders directly in DIR
    class_names, train = _read_classes(train_dir)
    splits = _eval_split(data_dir, train_dir, class_names, train, holdout_fraction, eval_split)
    every = splits.train.paths + (() if splits.eval is splits.train else splits.eval.paths)
    if check and len(every) <= HEADER_CHECK_LIMIT:
        check_headers(every, max_pixels)
    return splits


def _eval_split(data_dir, train_dir, class_names, train, holdout_fraction, eval_split):
    if eval_split == "train":
        return FolderSplits(class_names, train, train, train_dir)
    candidates = [eval_split] if eval_split else list(EVAL_FOLDERS)
    for name in candidates:
        folder = os.path.join(data_dir, name)
        if train_dir != data_dir and os.path.isdir(folder):
            _, evaluation = _read_classes(folder, class_names)
            return FolderSplits(class_names, train, evaluation, folder)
    if eval_split:
        raise FolderError(f"there is no {os.path.join(data_dir, eval_split)} folder to "
                          f"evaluate (eval_split={eval_split!r})")
    if not 0 < holdout_fraction < 1:
        raise FolderError(f"{data_dir} has no val/ folder and holdout_fraction="
                          f"{holdout_fraction}: set it in (0, 1) to hold out images for "
                          f"evaluation, or add {os.path.join(data_dir, 'val')}/CLASS/")
    train, evaluation = _held_out(train, holdout_fraction)
    if not len(evaluation.paths):
        raise FolderError(f"{train_dir}: too few images to hold any out for evaluation (each "
                          f"class needs two or more); add {os.path.join(data_dir, 'val')}/")
    return FolderSplits(class_names, train, evaluation,
                        f"{holdout_fraction:.0%} of each class of {train_dir}, held out (there "
                        f"is no {'/, '.join(EVAL_FOLDERS)}/ folder; holdout_fraction)")


# Up to this many files, every header is read when the folder is listed (~0.1 ms a file): a
# file that is not an image at all is named before anything trains. Larger sets skip it; a
# file that fails to decode later is named then (`find_undecodable`).
HEADER_CHECK_LIMIT = 50_000


def check_headers(paths, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """FolderError naming the first file whose header is not an image's (an empty file, a
    text file named .jpg, ...) or whose image has more than `max_pixels` pixels."""
    for path in paths:
        check_header(path, max_pixels)


def check_header(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    from PIL import UnidentifiedImageError

    from resnet_jax.data import pillow

    try:
        with pillow.open_image(path) as image:
            width, height = image.size  # the header is parsed by open
    except (UnidentifiedImageError, OSError) as error:
        raise FolderError(f"cannot read image {path}: {error}; fix or remove the file") \
            from None
    if width * height > max_pixels:
        raise FolderError(f"image {path} is {width}x{height}, {width * height:,} pixels, more "
                          f"than max_image_pixels={max_pixels:,} (a decompression bomb?); "
                          f"shrink or remove it, or raise --config.max_image_pixels")


def tf_error_reason(error) -> str:
    """TensorFlow's error message without its op and device decorations."""
    import re

    message = (str(getattr(error, "message", error)).strip().splitlines() or ["unreadable"])[0]
    message = re.sub(r"^\{\{[^}]*\}\}\s*", "", message)
    return re.sub(r"\s*\[Op:\w+\].*$", "", message)


def find_images(paths) -> list[str]:
    """The image files that `paths` name: files as given, folders searched recursively (sorted,
    hidden files skipped). UserError for a path that does not exist or when none is found."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [os.path.join(root, f) for f in sorted(files)
                          if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise UserError(f"{path} does not exist")
    if not found:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(paths)}")
    return found


def read_eval_image(path: str, size: int, resize: int, max_pixels: int = MAX_IMAGE_PIXELS):
    """The image at `path` as a run's evaluation sees it: uint8 (size, size, 3). FolderError
    naming the file if it cannot be read."""
    from resnet_jax.data import pillow

    check_header(path, max_pixels)  # a decompression bomb is named, not decoded
    try:
        with open(path, "rb") as f:
            return pillow.eval_pixels(f.read(), size, resize)
    except (OSError, pillow.UndecodableImage) as error:
        raise FolderError(f"cannot read image {path}: {error}") from None


def find_undecodable(paths) -> tuple[str, str] | None:
    """(path, reason) of the first file that TensorFlow cannot decode as an image, or None."""
    for path in paths:
        reason = decoding_failure(path)
        if reason is not None:
            return path, reason
    return None


def decoding_failure(path: str) -> str | None:
    """Why the input pipeline cannot decode the image at `path`, or None if it can."""
    from resnet_jax.data import pillow
    from resnet_jax.data.lazy_tf import tf
    from resnet_jax.data.preprocessing import decode_rgb

    try:  # training's decoder (TensorFlow's, or Pillow's), then evaluation's (Pillow's)
        image_bytes = tf.io.read_file(path)
        decode_rgb(image_bytes)
        pillow.rgb(image_bytes.numpy())
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
            tf.errors.PermissionDeniedError, pillow.UndecodableImage) as error:
        return tf_error_reason(error)  # undecodable, removed, unreadable
    return None


def unreadable(paths, max_pixels: int = MAX_IMAGE_PIXELS) -> dict[str, str]:
    """{path: why} of the files the input pipeline could not use (a header that is not an
    image's, too many pixels, a decoding failure: a truncated JPEG), each decoded once, on a
    few threads (TensorFlow's decoders release the GIL)."""
    import concurrent.futures

    def failure(path):
        try:
            check_header(path, max_pixels)
        except FolderError as error:
            return str(error)
        return decoding_failure(path)

    unique = list(dict.fromkeys(paths))
    with concurrent.futures.ThreadPoolExecutor(max(2, min(8, os.cpu_count() or 2))) as pool:
        found = dict(zip(unique, pool.map(failure, unique)))
    return {path: why for path, why in found.items() if why is not None}


def without_unreadable(train_split, eval_split, max_pixels):
    """skip_bad_images: (train, eval) (paths, labels) less the files that cannot be read, and
    "path: why" of each; named on stderr, and by the run in WORKDIR/skipped_images.txt."""
    bad = unreadable(list(train_split[0]) + list(eval_split[0]), max_pixels)
    kept = []
    for paths, labels in (train_split, eval_split):
        keep = np.array([path not in bad for path in paths], bool)
        if len(paths) and not keep.any():
            raise FolderError(f"every image of a split is unreadable (e.g. "
                                      f"{paths[0]}: {bad[paths[0]]})")
        kept.append(([p for p, k in zip(paths, keep) if k], np.asarray(labels)[keep]))
    if bad:
        first = next(iter(bad.items()))
        print(f"warning: skipped {len(bad)} unreadable image(s) (skip_bad_images), e.g. "
              f"{first[0]}: {first[1]}", file=sys.stderr, flush=True)
    return kept[0], kept[1], tuple(f"{path}: {why}" for path, why in bad.items())
