"""What each input-pipeline change bought: three preprocessing variants x two allocators.

    python tools/input_pipeline_ablation.py default   # glibc's default thresholds
    python tools/input_pipeline_ablation.py tuned     # resnet_jax.host_memory's settings

One process per allocator setting (mallopt is process-wide). Images/s of
`input_pipeline.train_batches` on 512 written JPEGs (as `python -m resnet_jax.benchmark
--input_pipeline`), batch 128, 16 batches per repeat, median of 5 repeats.
"""

import dataclasses
import statistics
import sys
import tempfile
import time

from resnet_jax import host_memory

if sys.argv[1:] not in (["default"], ["tuned"]):
    sys.exit("usage: input_pipeline_ablation.py default|tuned")
if sys.argv[1] == "tuned" and not host_memory.reuse_freed_memory():
    sys.exit("the allocator settings could not be applied (not glibc, or MALLOC_* set)")

import ml_collections  # noqa: E402
from resnet_jax.lazy_tf import tf  # noqa: E402

from resnet_jax import input_pipeline as ip  # noqa: E402
from resnet_jax import pipeline_benchmark as pb  # noqa: E402


def broadcast_normalize(image, mean, std):
    """The normalisation before 2026-11-30: TensorFlow broadcasts the per-channel constants."""
    return (tf.cast(image, tf.float32) - tf.constant(mean)) / tf.constant(std)


def float_images(source, normalize):
    """The ImageNet training preprocessing with normalised float32 output, as it was."""
    def preprocess(example, rng):
        seeds = tf.random.experimental.stateless_split(rng, 2)
        image = ip.inception_crop(example["image"], seeds[0], 224)
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        return {"image": normalize(image, ip.IMAGENET_MEAN, ip.IMAGENET_STD),
                "label": tf.cast(example["label"], tf.int32)}
    return dataclasses.replace(source, preprocess_train=preprocess)


def images_per_sec(source, batches=16, batch_size=128, repeats=5):
    rates = []
    for repeat in range(repeats):
        iterator = ip.train_batches(source, batch_size, repeat * (batches + 1), batches + 1, 0)
        next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        rates.append(batches * batch_size / (time.perf_counter() - start))
    return round(statistics.median(rates)), [round(r) for r in rates]


def main():
    data_dir = tempfile.mkdtemp()
    pb.write_jpeg_dataset(data_dir, {"train": pb.photo_like_images(512),
                                     "validation": pb.photo_like_images(10, seed=1)})
    source = ip.create_source(ml_collections.ConfigDict(dict(
        dataset="imagenette", data_dir=data_dir, image_size=224, eval_resize=256,
        shuffle_buffer=64, seed=0)))
    for name, variant in [
            ("float32, broadcast normalise (before)", float_images(source, broadcast_normalize)),
            ("float32, full-shape normalise", float_images(source, ip._normalize)),
            ("uint8 pixels (normalised on device)", source)]:
        print(sys.argv[1], name, images_per_sec(variant), flush=True)


if __name__ == "__main__":
    main()
