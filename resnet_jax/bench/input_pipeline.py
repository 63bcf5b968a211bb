"""Throughput and resume latency of the ImageNet training input pipeline, on real JPEG files
it writes itself.

    python -m resnet_jax.bench --input_pipeline [--batch_size 256] [--image_size 224]
        [--pipelines random_access,sequential_tfrecord,grain_pil]
    python -m resnet_jax.bench --resume_latency [--records 100000] [--batch_size 256]

`--input_pipeline` writes a small TFDS `imagenette`-format dataset of JPEG images at
ImageNet-like sizes (random sizes around 500x375) into a temporary dir, then times each
pipeline after a warm-up batch, repeats interleaved:
- random_access: `batching.train_batches`, the project's pipeline (ArrayRecord records fetched
  by index, tf.data JPEG decode + random-resized crop, flip, batch of uint8 pixels; the train
  step normalises them on the device);
- random_access_ta_wide: the same plus TrivialAugmentWide after the crop and flip (random
  erasing, mixup and cutmix run on the device, in the train step: no host cost);
- sequential_tfrecord: the pipeline before random access (TFRecord in sequence, shuffle
  buffer), same decode and crop;
- grain_pil: Grain over the same ArrayRecord records, PIL decode + crop in worker processes
  (needs `pip install grain`).
Reports images/s and images/s per CPU core. Needs TensorFlow (unlike the rest of the benchmark).
`--resume_latency`: seconds to the first batch at step 0 and mid-epoch (`resume_latency`).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time

import numpy as np

from resnet_jax.data.lazy_tf import tf, tfds
from resnet_jax.data.synthetic import photo_like_images, write_jpeg_dataset


def _sequential_tfrecord_batches(builder, source, batch_size: int, start_step: int,
                                 num_steps: int, seed: int, shuffle_buffer: int = 64):
    """The pipeline this project used before random access, kept here as the baseline: TFDS
    TFRecord files read in a seeded file order through a shuffle buffer, `.skip` to resume,
    the same decode + crop + flip (`source.preprocess_train`) and batching."""
    tf_options = tf.data.Options()
    tf_options.deterministic = True
    ds = builder.as_dataset(split="train", shuffle_files=True,
                            decoders={"image": tfds.decode.SkipDecoding()},
                            read_config=tfds.ReadConfig(shuffle_seed=seed, options=tf_options))
    ds = ds.shuffle(shuffle_buffer, seed=seed).repeat().skip(start_step * batch_size)
    ds = tf.data.Dataset.zip(tf.data.Dataset.range(start_step * batch_size, 2**62), ds)
    ds = ds.map(lambda position, example: source.preprocess_train(
        {"image": example["image"], "label": tf.cast(example["label"], tf.int32)},
        tf.stack([tf.constant(seed, tf.int64), position])),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).take(num_steps).prefetch(2) \
        .as_numpy_iterator()


def _grain_batches(data_dir: str, batch_size: int, image_size: int, seed: int):
    """The same source (TFDS ArrayRecord) through Grain: a seeded global shuffle, JPEG decode +
    random-resized crop + flip with PIL and NumPy in Grain's worker processes (one a core)."""
    import io

    import grain
    from absl import flags
    from PIL import Image

    if not flags.FLAGS.is_parsed():  # Grain reads absl flags; this benchmark uses argparse
        flags.FLAGS(["benchmark"])

    class DecodeCropFlip(grain.transforms.RandomMap):
        def random_map(self, example, rng):
            image = Image.open(io.BytesIO(example["image"])).convert("RGB")
            width, height = image.size
            area = width * height * rng.uniform(0.08, 1.0)
            aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            w = min(width, int(round(np.sqrt(area * aspect))))
            h = min(height, int(round(np.sqrt(area / aspect))))
            x, y = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
            pixels = np.asarray(image.resize((image_size, image_size), Image.BILINEAR,
                                             box=(x, y, x + w, y + h)))
            if rng.random() < 0.5:
                pixels = pixels[:, ::-1]
            return {"image": np.ascontiguousarray(pixels), "label": example["label"]}

    records = tfds.builder("imagenette", data_dir=data_dir).as_data_source(
        "train", decoders={"image": tfds.decode.SkipDecoding()})
    ds = (grain.MapDataset.source(records).seed(seed).shuffle().repeat()
          .random_map(DecodeCropFlip()).batch(batch_size).to_iter_dataset())
    workers = len(os.sched_getaffinity(0))
    return iter(ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers)))


PIPELINES = ("random_access", "random_access_ta_wide", "sequential_tfrecord", "grain_pil")


def run(batch_size: int = 256, image_size: int = 224, num_images: int = 512,
        batches: int = 16, repeats: int = 5, pipelines=("random_access",)) -> dict:
    """Images/s of each pipeline in `pipelines` (PIPELINES) on the same JPEG images, median
    over repeats (the tf.data pipelines' repeats interleaved, then Grain's)."""
    from resnet_jax.data import batching, datasets
    from resnet_jax.data.spec import DataSpec

    cores = len(os.sched_getaffinity(0))
    images = {"train": photo_like_images(num_images), "validation": photo_like_images(10, seed=1)}
    rates = {name: [] for name in pipelines}
    cpu_ms = {name: [] for name in pipelines}
    with tempfile.TemporaryDirectory() as data_dir, \
            tempfile.TemporaryDirectory() as tfrecord_dir:
        write_jpeg_dataset(data_dir, images)
        spec = DataSpec(dataset="imagenette", data_dir=data_dir, image_size=image_size,
                        eval_crop=image_size, eval_resize=256, seed=0)
        source = datasets.create_source(spec)
        augmented = None
        if "random_access_ta_wide" in pipelines:
            augmented = datasets.create_source(dataclasses.replace(spec,
                                                                   auto_augment="ta_wide"))
        if "sequential_tfrecord" in pipelines:
            write_jpeg_dataset(tfrecord_dir, images, file_format="tfrecord")
            tfrecord_builder = tfds.builder("imagenette", data_dir=tfrecord_dir)

        def measure(name, iterator):
            next(iterator)  # warm-up: builds the pipeline, fills the prefetch buffer
            start, cpu_start = time.perf_counter(), _cpu_times()
            for _ in range(batches):
                next(iterator)
            rates[name].append(batches * batch_size / (time.perf_counter() - start))
            cpu_end = _cpu_times()
            cpu_ms[name].append({kind: 1e3 * (cpu_end[kind] - cpu_start[kind])
                                 / (batches * batch_size) for kind in ("user", "system")})

        for repeat in range(repeats):  # the tf.data pipelines, interleaved
            start_step = repeat * (batches + 1)
            if "random_access" in pipelines:
                measure("random_access", batching.train_batches(
                    source, batch_size, start_step, batches + 1, seed=0))
            if "random_access_ta_wide" in pipelines:
                measure("random_access_ta_wide", batching.train_batches(
                    augmented, batch_size, start_step, batches + 1, seed=0))
            if "sequential_tfrecord" in pipelines:
                measure("sequential_tfrecord", _sequential_tfrecord_batches(
                    tfrecord_builder, source, batch_size, start_step, batches + 1, seed=0))
        if "grain_pil" in pipelines:
            # Alone: Grain's worker processes keep decoding ahead between next() calls, which
            # would take CPU from (and hand buffered batches to) interleaved measurements.
            iterator = _grain_batches(data_dir, batch_size, image_size, seed=0)
            for _ in range(repeats):
                measure("grain_pil", iterator)
            del iterator  # stops Grain's workers
    results = {}
    for name in pipelines:
        rate = statistics.median(rates[name])
        results[name] = {
            "images_per_sec": rate, "images_per_sec_per_core": rate / cores,
            "repeats": rates[name],
            # CPU time per image (this process and its finished children, e.g. Grain's
            # workers are not counted until they exit: compare Grain by images/s),
            # median over repeats: user (decode, resize) and system (page faults, wake-ups).
            "cpu_ms_per_image": {kind: statistics.median(c[kind] for c in cpu_ms[name])
                                 for kind in ("user", "system")}}
    first = results[pipelines[0]]
    return {**first, "cores": cores, "batch_size": batch_size, "image_size": image_size,
            "pipelines": results,
            "pipeline": "JPEG decode + random-resized crop + flip + uint8 batch"}


def _cpu_times() -> dict:
    times = os.times()
    return {"user": times.user, "system": times.system}


def resume_latency(num_records: int = 100_000, batch_size: int = 256, image_size: int = 224,
                   repeats: int = 3) -> dict:
    """Seconds to the first training batch when starting at step 0 and at the middle of the
    first epoch, on a dataset of `num_records` small JPEG records: the random-access pipeline
    (`batching.train_batches`) and the sequential TFRecord baseline, which skips to its
    position. Median over repeats."""
    from resnet_jax.data import batching, datasets
    from resnet_jax.data.spec import DataSpec

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 40, 3), dtype=np.uint8) for _ in range(num_records)]
    middle = num_records // 2 // batch_size
    result = {"num_records": num_records, "batch_size": batch_size, "middle_step": middle}
    with tempfile.TemporaryDirectory() as data_dir, \
            tempfile.TemporaryDirectory() as tfrecord_dir:
        split = {"train": images, "validation": images[:10]}
        write_jpeg_dataset(data_dir, split)
        write_jpeg_dataset(tfrecord_dir, split, file_format="tfrecord")
        result["bytes_per_record"] = _split_bytes(data_dir) / num_records
        del images, split
        source = datasets.create_source(DataSpec(dataset="imagenette", data_dir=data_dir,
                                                 image_size=image_size, eval_crop=image_size))
        tfrecord_builder = tfds.builder("imagenette", data_dir=tfrecord_dir)
        pipelines = {
            "random_access": lambda step: batching.train_batches(source, batch_size, step, 1,
                                                                 seed=0),
            "sequential_tfrecord": lambda step: _sequential_tfrecord_batches(
                tfrecord_builder, source, batch_size, step, 1, seed=0)}
        for name, batches in pipelines.items():
            for step in (0, middle):
                seconds = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    next(iter(batches(step)))
                    seconds.append(time.perf_counter() - start)
                result[f"{name}_step_{'0' if step == 0 else 'middle'}_s"] = \
                    statistics.median(seconds)
    return result


def _split_bytes(data_dir: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(data_dir) for name in names
               if "-train." in name)
