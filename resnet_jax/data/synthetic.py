"""Image datasets written on the spot, for the tests and the input-pipeline benchmark: images
that JPEG-compress like photographs, saved as a real TFDS dataset in a registered builder's
format (so that TFDS and `resnet_jax.data` read it as they would the downloaded one)."""

from __future__ import annotations

import numpy as np

from resnet_jax.data.lazy_tf import tf, tfds

# name -> (builder config, number of classes) of the registered TFDS builders written here.
_WRITABLE = {"imagenette": ("full-size-v2", 10), "imagenet2012": (None, 1000)}


def write_jpeg_dataset(data_dir: str, splits: dict[str, list[np.ndarray]],
                       name: str = "imagenette", file_format: str = "array_record") -> None:
    """A real TFDS dataset of JPEG images in `data_dir`, in the format and version of the
    registered builder `name` (imagenette or imagenet2012), so that it (and `resnet_jax.data`)
    reads it. `file_format`: "array_record" (random access) or "tfrecord".

    `splits` maps "train"/"validation" to uint8 (H, W, 3) images; labels cycle through 0..9.
    """
    config, num_classes = _WRITABLE[name]

    def split(images):
        return tf.data.Dataset.from_generator(
            lambda: ({"image": im, "label": i % 10} for i, im in enumerate(images)),
            output_signature={"image": tf.TensorSpec((None, None, 3), tf.uint8),
                              "label": tf.TensorSpec((), tf.int64)})

    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(num_classes=num_classes)})
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, config=config, version=str(tfds.builder_cls(name).VERSION),
        data_dir=data_dir, split_datasets={name: split(images) for name, images in splits.items()},
        features=features, file_format=file_format)


def photo_like_images(count: int, seed: int = 0) -> list[np.ndarray]:
    """Random sizes around 500x375 of smooth noise: JPEG-compresses like photographs."""

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        height, width = int(rng.integers(300, 450)), int(rng.integers(400, 560))
        small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
        big = tf.image.resize(small[None], (height, width), method="bicubic")[0]
        images.append(tf.cast(tf.clip_by_value(big, 0, 255), tf.uint8).numpy())
    return images


MULTILABEL_SHAPES = ("disk", "square", "bar", "cross", "ring")
_SHAPE_COLOURS = {"disk": (220, 40, 40), "square": (40, 180, 60), "bar": (40, 80, 220),
                  "cross": (240, 220, 40), "ring": (200, 60, 220)}

def write_multilabel_folder(root: str, train: int = 200, val: int = 60, size: int = 72,
                            seed: int = 0, shapes=MULTILABEL_SHAPES) -> str:
    """A multi-label image set (`resnet_jax.data.multilabel`): ROOT/images/*.jpg on a noisy
    grey background, each holding 1 to 3 of `shapes` (each in its own colour, jittered) at
    random places and sizes (its labels), listed in ROOT/train.csv and ROOT/val.csv."""
    import csv
    import os

    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    for split, count in (("train", train), ("val", val)):
        with open(os.path.join(root, f"{split}.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "labels"])
            for i in range(count):
                names = sorted(rng.choice(shapes, size=int(rng.integers(1, 4)), replace=False))
                grey = rng.integers(70, 170, (size // 8, size // 8, 1))
                background = (grey + rng.integers(-12, 13, (size // 8, size // 8, 3))).astype(
                    np.uint8)
                image = Image.fromarray(background).resize((size, size), Image.BILINEAR)
                draw = ImageDraw.Draw(image)
                for name in names:
                    _draw_shape(draw, name, rng, size)
                relative = f"images/{split}_{i:04d}.jpg"
                image.save(os.path.join(root, relative), quality=90)
                writer.writerow([relative, " ".join(names)])
    return root


def _draw_shape(draw, name: str, rng, size: int) -> None:
    extent = int(rng.integers(size // 4, size // 2))
    x, y = (int(v) for v in rng.integers(0, size - extent, 2))
    box = (x, y, x + extent, y + extent)
    colour = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in _SHAPE_COLOURS[name])
    if name == "disk":
        draw.ellipse(box, fill=colour)
    elif name == "square":
        draw.rectangle(box, fill=colour)
    elif name == "bar":
        draw.rectangle((x, y + extent // 3, x + extent, y + 2 * extent // 3), fill=colour)
    elif name == "cross":
        width = max(extent // 5, 2)
        draw.line((x, y, x + extent, y + extent), fill=colour, width=width)
        draw.line((x, y + extent, x + extent, y), fill=colour, width=width)
    else:  # ring
        draw.ellipse(box, outline=colour, width=max(extent // 6, 2))
