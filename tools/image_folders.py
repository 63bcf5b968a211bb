"""Writes image-folder datasets from data shipped with scikit-learn and matplotlib, offline:
what the tests and the figures of docs/own-images.md train on.

    python tools/image_folders.py digits DIR
    python tools/image_folders.py photos DIR [--classes 9 --train 60 --val 20]
    python tools/image_folders.py shapes DIR [--train 400 --val 100 --seed 5]

- `write_digits`: scikit-learn's digits as 8x8 grayscale PNGs, DIR/{train,val}/DIGIT/*.png, with
  the fixed stratified split of `datasets.digits_arrays`.
- `write_photo_crops`: natural-photo crops, JPEG, mixed sizes: class k holds random crops of one
  region of one of the photos shipped with scikit-learn and matplotlib.
- shapes: a multi-label set (`resnet_jax.data.synthetic.write_multilabel_folder`): 1 to 3 of 5
  coloured shapes per image, DIR/images/*.jpg with DIR/train.csv and DIR/val.csv.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def write_digits(root: str, splits=("train", "val")) -> str:
    from resnet_jax.data.datasets import digits_arrays

    for split, (images, labels) in zip(splits, digits_arrays()):
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = os.path.join(root, split, str(label))
            os.makedirs(folder, exist_ok=True)
            pixels = np.round(image[..., 0] * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(os.path.join(folder, f"{i:04d}.png"))
    return root


def photo_regions(count: int) -> list[np.ndarray]:
    """`count` regions (RGB arrays) of the shipped photos: each photo cut into vertical bands."""
    import matplotlib
    import sklearn.datasets

    photos = [np.asarray(image) for image in sklearn.datasets.load_sample_images().images]
    hopper = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data",
                          "grace_hopper.jpg")
    photos.append(np.asarray(Image.open(hopper).convert("RGB")))
    per_photo = -(-count // len(photos))
    regions = []
    for photo in photos:
        width = photo.shape[1] // per_photo
        regions += [photo[:, i * width:(i + 1) * width] for i in range(per_photo)]
    return regions[:count]


def write_photo_crops(root: str, classes: int = 9, train: int = 60, val: int = 20,
                      seed: int = 0) -> str:
    """DIR/{train,val}/class_K/*.jpg: random crops (48..160 px, any aspect) of region K,
    resized by a random factor, so that sizes are mixed."""
    rng = np.random.default_rng(seed)
    for label, region in enumerate(photo_regions(classes)):
        for split, count in (("train", train), ("val", val)):
            folder = os.path.join(root, split, f"class_{label}")
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                h = int(rng.integers(48, min(160, region.shape[0])))
                w = int(rng.integers(48, min(160, region.shape[1])))
                top = int(rng.integers(0, region.shape[0] - h))
                left = int(rng.integers(0, region.shape[1] - w))
                scale = rng.uniform(0.6, 1.5)
                crop = Image.fromarray(region[top:top + h, left:left + w])
                crop = crop.resize((max(8, int(w * scale)), max(8, int(h * scale))))
                crop.save(os.path.join(folder, f"{i:03d}.jpg"), quality=90)
    return root


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("digits", "photos", "shapes"))
    parser.add_argument("dir")
    parser.add_argument("--classes", type=int, default=9)
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--val", type=int, default=20)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    if args.kind == "digits":
        write_digits(args.dir)
    elif args.kind == "shapes":
        from resnet_jax.data.synthetic import write_multilabel_folder

        write_multilabel_folder(args.dir, args.train, args.val, seed=args.seed)
        print(f"wrote {args.dir}/images, train.csv and val.csv")
        raise SystemExit(0)
    else:
        write_photo_crops(args.dir, args.classes, args.train, args.val)
    print(f"wrote {args.dir}/train and {args.dir}/val")
