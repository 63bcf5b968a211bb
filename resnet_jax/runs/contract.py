"""A run's input contract: how an image file becomes its model's input, and what the model's
outputs mean. Read one way, from what the run recorded (its config.json through the plan, its
classes.txt, its checkpoint's shapes), by predict, evaluate, embed, export and the service."""

from __future__ import annotations

import dataclasses

import numpy as np

from resnet_jax import tasks
from resnet_jax.data import datasets, folders, pillow, preprocessing
from resnet_jax.data.spec import DataSpec
from resnet_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class InputContract:
    dataset: str
    image_shape: tuple[int, int, int]  # (H, W, C) of the model's input: the evaluation crop
    eval_resize: int  # the shorter side is resized to this, then center-cropped
    max_image_pixels: int
    # (mean, std) per channel: the model takes uint8 pixels normalised on the device; None: a
    # run on a dataset's arrays (digits, CIFAR), which takes no image files
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None
    class_names: tuple[str, ...]
    task: tasks.Task

    @classmethod
    def of(cls, data: DataSpec, task: tasks.Task, class_names, in_channels: int = 3
           ) -> InputContract:
        files = data.dataset in datasets.FILE_DATASETS
        normalization = (preprocessing.IMAGENET_MEAN, preprocessing.IMAGENET_STD) if files \
            else None
        return cls(data.dataset, (data.eval_crop, data.eval_crop, in_channels), data.eval_resize,
                   data.max_image_pixels, normalization, tuple(class_names), task)

    @property
    def takes_image_files(self) -> bool:
        return self.normalization is not None

    def require_image_files(self) -> None:
        """UserError for a run on a dataset's arrays: it has no image preprocessing."""
        if not self.takes_image_files:
            raise UserError(f"runs on {self.dataset!r} take arrays, not image files: predict "
                            f"and the exports' preprocessing serve runs on "
                            f"{', '.join(datasets.FILE_DATASETS)}")

    def read_image(self, path: str) -> np.ndarray:
        """The image file at `path` as the run's evaluation sees it: uint8 (H, W, 3)."""
        return folders.read_eval_image(path, self.image_shape[0], self.eval_resize,
                                       self.max_image_pixels)

    def decode(self, data: bytes) -> np.ndarray:
        """An image file's bytes (a request's body) as the run's evaluation sees it: uint8
        (H, W, 3), as `read_image` gives for the same file. pillow.UndecodableImage if they
        are not an image, pillow.TooManyPixels past the run's `max_image_pixels`."""
        pillow.check_pixels(data, self.max_image_pixels)  # a decompression bomb: not decoded
        return pillow.eval_pixels(data, self.image_shape[0], self.eval_resize)

    def preprocessing_record(self) -> dict | str:
        """What the preprocessing is, for a serving stack to repeat (the exports' sidecar)."""
        if not self.takes_image_files:
            return f"the {self.dataset} dataset's arrays"
        mean, std = self.normalization
        return pillow.spec(self.image_shape[0], self.eval_resize, mean, std)

    def predict(self, logits: np.ndarray, top_k: int, threshold: float | None = None):
        """The task's answer per image (`Task.predict`) with this run's class names."""
        return self.task.predict(logits, self.class_names, top_k, threshold)
