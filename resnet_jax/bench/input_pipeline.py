"""Throughput of the ImageNet training input pipeline, on real JPEG files it writes itself.

    python -m resnet_jax.bench --input_pipeline [--batch_size 256] [--image_size 224]

Writes a small TFDS `imagenette`-format dataset of JPEG images at ImageNet-like sizes
(random sizes around 500x375) into a temporary dir, then times `batching.train_batches`
(read, JPEG decode + random-resized crop, flip, batch of uint8 pixels; the train step
normalises them on the device) after a warm-up batch.
Reports images/s and images/s per CPU core. Needs TensorFlow (unlike the rest of the benchmark).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np

from resnet_jax.data.lazy_tf import tf, tfds


def write_jpeg_dataset(data_dir: str, splits: dict[str, list[np.ndarray]]) -> None:
    """A real TFDS dataset of JPEG files in `data_dir`, in `imagenette`'s format and version,
    so that the registered Imagenette builder (and `resnet_jax.data`) reads it.

    `splits` maps "train"/"validation" to uint8 (H, W, 3) images; labels cycle through 0..9.
    """
    def split(images):
        return tf.data.Dataset.from_generator(
            lambda: ({"image": im, "label": i % 10} for i, im in enumerate(images)),
            output_signature={"image": tf.TensorSpec((None, None, 3), tf.uint8),
                              "label": tf.TensorSpec((), tf.int64)})

    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(num_classes=10)})
    tfds.dataset_builders.TfDataBuilder(
        name="imagenette", config="full-size-v2", version="1.0.0", data_dir=data_dir,
        split_datasets={name: split(images) for name, images in splits.items()},
        features=features).download_and_prepare()


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


def run(batch_size: int = 256, image_size: int = 224, num_images: int = 512,
        batches: int = 16, repeats: int = 5) -> dict:
    from resnet_jax.configs import default
    from resnet_jax.data import batching, datasets

    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as data_dir:
        write_jpeg_dataset(data_dir, {"train": photo_like_images(num_images),
                                      "validation": photo_like_images(10, seed=1)})
        config = default.get_config()  # every key: the pipeline reads what it needs
        config.update(
            dataset="imagenette", data_dir=data_dir, image_size=image_size, eval_resize=256,
            # Each epoch refills the shuffle buffer before its first image: with ImageNet's
            # 1,281,167 images that is rare, with 512 it would be every few batches.
            shuffle_buffer=64, seed=0)
        source = datasets.create_source(config)
        rates, cpu_ms = [], []
        for repeat in range(repeats):
            iterator = batching.train_batches(source, batch_size, repeat * (batches + 1),
                                                    batches + 1, seed=0)
            next(iterator)  # warm-up: builds the pipeline, fills the prefetch buffer
            start, cpu_start = time.perf_counter(), os.times()
            for _ in range(batches):
                next(iterator)
            rates.append(batches * batch_size / (time.perf_counter() - start))
            cpu_end = os.times()
            cpu_ms.append({kind: 1e3 * (getattr(cpu_end, kind) - getattr(cpu_start, kind))
                           / (batches * batch_size) for kind in ("user", "system")})
    rate = statistics.median(rates)
    return {"images_per_sec": rate, "images_per_sec_per_core": rate / cores, "cores": cores,
            "batch_size": batch_size, "image_size": image_size, "repeats": rates,
            # CPU time of this process per image, median over repeats: user (decode, resize)
            # and system (page faults, thread wake-ups).
            "cpu_ms_per_image": {kind: statistics.median(c[kind] for c in cpu_ms)
                                 for kind in ("user", "system")},
            "pipeline": "JPEG decode + random-resized crop + flip + uint8 batch"}
