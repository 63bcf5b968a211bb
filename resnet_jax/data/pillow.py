"""Images through Pillow, without TensorFlow: the evaluation's preprocessing, exactly
torchvision's reference (`Resize(resize)` then `CenterCrop(size)` on a PIL image, as its
`ClassificationPresetEval` does), and the decoding of the formats TensorFlow lacks (WebP, TIFF).

Evaluation, prediction, embedding and serving all read an image file here, so a run's eval
pixels are the ones `predict.py` classifies and the ones torchvision's reference transform
gives; `predict.py` on a few files never imports TensorFlow. Training keeps TensorFlow's decoder
and augmentation in its tf.data pipeline (`preprocessing`).
"""

from __future__ import annotations

import io

import numpy as np


class UndecodableImage(ValueError):
    """Pillow cannot decode the bytes (in a tf.data pipeline TensorFlow raises it as
    InvalidArgumentError, as for the files it decodes itself)."""


def open_image(source):
    """`PIL.Image.open(source)` (a path or a file object) with the package's pixel limit in
    place of Pillow's: `max_image_pixels`, which `folders.check_header` applies to the header
    before anything decodes. Pillow's limit is a module-wide setting (it would warn, or refuse
    at twice its default); it is lifted here, the one place that opens images, for the process,
    rather than lifted and restored around each call, which races between threads."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    return Image.open(source)


def _opened(data: bytes):
    from PIL import UnidentifiedImageError

    try:
        image = open_image(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise UndecodableImage(f"Pillow cannot decode the image: {error}") from None
    return image


class TooManyPixels(ValueError):
    """The image's header says it has more pixels than the limit (a decompression bomb?)."""


def check_pixels(data: bytes, max_pixels: int) -> None:
    """UndecodableImage if `data`'s header is not an image's; TooManyPixels if its image has
    more than `max_pixels` pixels. Reads the header only: nothing is decoded."""
    from PIL import UnidentifiedImageError

    try:
        with open_image(io.BytesIO(data)) as image:
            width, height = image.size
    except UnidentifiedImageError:
        raise UndecodableImage("not an image: no format Pillow reads (JPEG, PNG, WebP, GIF, "
                               "BMP, TIFF) starts this way") from None
    except (OSError, SyntaxError) as error:
        raise UndecodableImage(f"not an image Pillow can read: {error}") from None
    if width * height > max_pixels:
        raise TooManyPixels(f"the image is {width}x{height}, {width * height:,} pixels, more "
                            f"than the limit of {max_pixels:,} (max_image_pixels)")


def rgb(data: bytes) -> np.ndarray:
    """An image file's bytes -> (H, W, 3) uint8; grayscale, palette and alpha become RGB."""
    with _opened(data) as image:
        return np.asarray(image.convert("RGB"), np.uint8)


def eval_pixels(data: bytes, size: int, resize: int) -> np.ndarray:
    """An image file's bytes as evaluation and serving see it, uint8 (size, size, 3): RGB, the
    shorter side resized to `resize` (Pillow's antialiased bilinear; the longer side
    int(resize * long / short)), then the center `size` x `size` crop (offsets rounded), as
    torchvision's `Resize` and `CenterCrop` compute them."""
    from PIL import Image

    with _opened(data) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    if width <= height:
        shape = (resize, int(resize * height / width))
    else:
        shape = (int(resize * width / height), resize)
    if shape != (width, height):
        image = image.resize(shape, Image.BILINEAR)
    width, height = shape
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    pixels = np.asarray(image, np.uint8)[top:top + size, left:left + size]
    if pixels.shape != (size, size, 3):  # torchvision pads what the image lacks with zeros
        padded = np.zeros((size, size, 3), np.uint8)
        padded[:pixels.shape[0], :pixels.shape[1]] = pixels
        pixels = padded
    return pixels


def spec(size: int, resize: int, mean, std) -> dict:
    """What `eval_pixels` + normalisation do, for a serving stack to repeat."""
    return {"decode": "RGB (grayscale and alpha converted), uint8 0..255, by Pillow",
            "resize_shorter_side": resize,
            "resize_method": "Pillow bilinear, antialiased (torchvision's Resize on a PIL "
                             "image: the longer side int(resize * long / short))",
            "center_crop": [size, size], "mean": [float(m) for m in mean],
            "std": [float(s) for s in std],
            "normalize": "(pixel - mean) / std, pixels in 0..255",
            "channel_order": "RGB"}
