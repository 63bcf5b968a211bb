"""CPU cost of each TrivialAugmentWide/RandAugment op (resnet_jax.data.autoaugment) as the
input pipeline runs it: one uint8 image through `Dataset.map` on one tf.data thread.

    python tools/autoaugment_op_costs.py [--size 224] [--images 400]

Prints milliseconds per image for each op at a mid-range magnitude, and for the bare
pipeline (Identity's cost is the map's own overhead).
"""

import argparse
import time

import numpy as np

from resnet_jax.data import autoaugment
from resnet_jax.data.lazy_tf import tf

MAGNITUDES = {"Posterize": 4.0, "Solarize": 0.5, "Rotate": 30.0, "TranslateX": 10.0,
              "TranslateY": 10.0}


def milliseconds_per_image(image, fn, images: int) -> float:
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    ds = tf.data.Dataset.from_tensors(image).repeat(images).map(fn).with_options(options)
    for _ in ds.take(5):  # traced and warmed up
        pass
    start = time.perf_counter()
    for _ in ds:
        pass
    return (time.perf_counter() - start) / images * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=400)
    args = parser.parse_args()
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3),
                                                          dtype=np.uint8))
    for op in autoaugment.OPS:
        magnitude = tf.constant(MAGNITUDES.get(op, 0.5), tf.float32)
        ms = milliseconds_per_image(
            image, lambda x, op=op, magnitude=magnitude: autoaugment.apply_op(x, op, magnitude),
            args.images)
        print(f"{op:12s} {ms:.3f} ms")
    print(f"{'(pipeline)':12s} {milliseconds_per_image(image, lambda x: x, args.images):.3f} ms")


if __name__ == "__main__":
    main()
