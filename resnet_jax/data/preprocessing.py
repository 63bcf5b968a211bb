"""Per-example preprocessing in tf.data: normalisation, CIFAR's pad-crop-flip, ImageNet's
random-resized crop (decoded straight from the JPEG) and resize + center crop. Random ops are
stateless, seeded by the caller from (seed, stream position)."""

from __future__ import annotations

import numpy as np

from resnet_jax.data import pillow
from resnet_jax.data.lazy_tf import tf

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CIFAR10_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR10_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)
CIFAR100_MEAN = (0.5071 * 255, 0.4865 * 255, 0.4409 * 255)
CIFAR100_STD = (0.2673 * 255, 0.2564 * 255, 0.2762 * 255)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def normalize(image, mean, std):
    """(image - mean) / std per channel, on an image of static shape.

    The per-channel constants are expanded to the image's full shape first: TensorFlow's
    broadcasting kernel costs ~10 ns per element (1.5 ms of a 224x224x3 image, more than the
    JPEG decode of its crop), equal shapes take the vectorised path. Same values, bitwise.
    """
    shape = image.shape
    if not shape.is_fully_defined():
        raise ValueError(f"normalize needs a static image shape, got {shape}")
    channels = shape[-1]
    full = lambda values: tf.constant(np.broadcast_to(  # noqa: E731
        np.asarray(values, np.float32).reshape(channels), shape.as_list()))
    return (tf.cast(image, tf.float32) - full(mean)) / full(std)


def pad_crop_flip(image, seed, pad: int, flip: bool):
    """The CIFAR augmentation: zero-pad, random crop back to size, random horizontal flip."""
    height, width, channels = image.shape
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    seeds = tf.random.experimental.stateless_split(seed, 2)
    image = tf.image.stateless_random_crop(padded, (height, width, channels), seed=seeds[0])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    return image


def to_pixels(image):
    """Resampled float pixels -> uint8, rounded (as PIL's resampling does)."""
    return tf.saturate_cast(tf.round(image), tf.uint8)


def inception_crop(jpeg_bytes, seed, size: int, min_area: float = 0.08):
    """Random-resized crop (area min_area-100%, aspect 3/4-4/3) decoded straight from the
    JPEG."""
    shape = tf.image.extract_jpeg_shape(jpeg_bytes)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)), seed=seed,
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(min_area, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
    image = tf.io.decode_and_crop_jpeg(jpeg_bytes, window, channels=3)
    return tf.image.resize(image, (size, size), method="bilinear", antialias=False)


def random_resized_crop(image, seed, size: int, min_area: float = 0.08):
    """The same random-resized crop on an already decoded image (any format)."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)),
        seed=seed, min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(min_area, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, crop_size)
    return tf.image.resize(image, (size, size), method="bilinear", antialias=False)


# Files TensorFlow does not decode, known by their first bytes (WebP: RIFF....WEBP; TIFF:
# II*<NUL> or MM<NUL>*): Pillow decodes them, as torchvision's ImageFolder does.
_PILLOW_FORMATS = r"(?s)(RIFF....WEBP|II\*\x00|MM\x00\*).*"


def decode_rgb(image_bytes):
    """JPEG, PNG, BMP, GIF (first frame), WebP or TIFF -> (H, W, 3) uint8; grayscale and RGBA
    become RGB. WebP and TIFF are decoded by Pillow (the same pixels Pillow gives)."""
    def by_pillow():
        # as uint8 values: a string passed to NumPy loses its trailing NUL bytes
        raw = tf.io.decode_raw(image_bytes, tf.uint8)
        image = tf.numpy_function(lambda values: pillow.rgb(values.tobytes()), [raw],
                                  tf.uint8, stateful=False)
        return tf.ensure_shape(image, (None, None, 3))

    def by_tensorflow():
        return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)

    head = tf.strings.substr(image_bytes, 0, 12)
    return tf.cond(tf.strings.regex_full_match(head, _PILLOW_FORMATS), by_pillow,
                   by_tensorflow)


def eval_pixels(image_bytes, size: int, resize: int):
    """An image file's bytes (a string tensor) as evaluation sees it (`pillow.eval_pixels`:
    torchvision's Resize + CenterCrop), uint8 (size, size, 3), inside a tf.data pipeline."""
    raw = tf.io.decode_raw(image_bytes, tf.uint8)  # bytes as values: trailing NULs survive
    image = tf.numpy_function(lambda values: pillow.eval_pixels(values.tobytes(), size, resize),
                              [raw], tf.uint8, stateful=False)
    return tf.ensure_shape(image, (size, size, 3))
