"""What the input pipeline is told: the dataset and how its images are read, cropped and
augmented, resolved once from the config by the plan (`resnet_jax.plan`). Nothing in data/
reads the config itself."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataSpec:
    dataset: str = "digits"
    data_dir: str = ""            # TFDS data dir, or the folder of the images
    eval_split: str = ""          # "": the dataset's held-out split
    image_size: int = 224         # the training crop
    eval_crop: int = 224          # the evaluation's center crop (image files)
    eval_resize: int = 256        # the evaluation resizes the shorter side to this first
    crop_min_area: float = 0.08   # random-resized crop: share of the area, at least
    random_flip: bool = True
    auto_augment: str = ""        # "", "ta_wide" or "rand_augment"
    ra_num_ops: int = 2
    ra_magnitude: int = 9
    holdout_fraction: float = 0.2  # a folder without val/: share held out per class
    max_image_pixels: int = 178_956_970
    skip_bad_images: bool = False  # image files: leave out (and name) the unreadable ones
    fake_num_classes: int = 1000
    fake_num_examples: int = 1024
    seed: int = 0                  # fake data: the images' content
