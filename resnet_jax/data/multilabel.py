"""Multi-label image sets: DIR holds the images and DIR/train.csv, DIR/val.csv.

    path,labels
    img/0001.jpg,cat dog
    img/0002.jpg,dog

Paths are relative to DIR; labels are class names separated by spaces (1 or more per image).
The classes are the labels of train.csv, sorted. A missing file, an unknown label in val.csv, an
empty label set or a row given twice is refused in one line that names the file and the row.
(fastai's and Keras's `flow_from_dataframe` CSVs in the same shape.)
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from resnet_jax.data.folders import FolderError

SPLIT_FILES = {"train": "train.csv", "val": "val.csv"}


@dataclasses.dataclass(frozen=True)
class LabelledImages:
    paths: list[str]
    labels: list[tuple[str, ...]]  # the label names of each image


@dataclasses.dataclass(frozen=True)
class MultiLabelSplits:
    class_names: tuple[str, ...]
    train: LabelledImages
    eval: LabelledImages
    eval_from: str

    def targets(self, split: LabelledImages) -> np.ndarray:
        """(N, classes) float32 multi-hot rows."""
        index = {name: i for i, name in enumerate(self.class_names)}
        rows = np.zeros((len(split.paths), len(self.class_names)), np.float32)
        for row, names in enumerate(split.labels):
            rows[row, [index[name] for name in names]] = 1.0
        return rows


def read_csv(data_dir: str, name: str) -> LabelledImages:
    """DIR/NAME's rows, checked: header `path,labels`, files present, labels non-empty, no
    path twice."""
    path = os.path.join(data_dir, name)
    if not os.path.isfile(path):
        raise FolderError(f"{path} is missing: a multi-label data_dir holds train.csv and "
                          f"val.csv (header path,labels; labels space-separated)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["path", "labels"]:
            raise FolderError(f"{path}, row 1: the header must be 'path,labels', got "
                              f"{','.join(header or [])!r}")
        paths, labels, seen = [], [], {}
        for row_number, row in enumerate(reader, 2):
            if not row or not any(cell.strip() for cell in row):
                continue  # a blank line
            where = f"{path}, row {row_number}"
            if len(row) < 2:
                raise FolderError(f"{where}: expected 'path,labels', got {','.join(row)!r}")
            relative, names = row[0].strip(), tuple(sorted(set(row[1].split())))
            if not names:
                raise FolderError(f"{where}: {relative} has no labels (every image needs one "
                                  f"or more)")
            if relative in seen:
                raise FolderError(f"{where}: {relative} is listed twice (first in row "
                                  f"{seen[relative]})")
            seen[relative] = row_number
            image = os.path.join(data_dir, relative)
            if not os.path.isfile(image):
                raise FolderError(f"{where}: {image} does not exist")
            paths.append(image)
            labels.append(names)
    if not paths:
        raise FolderError(f"{path} lists no images")
    return LabelledImages(paths, labels)


def read_splits(data_dir: str) -> MultiLabelSplits:
    if not data_dir or not os.path.isdir(data_dir):
        raise FolderError(f"data_dir {data_dir!r} is not a directory: give the directory of "
                          f"the images and their train.csv and val.csv")
    train = read_csv(data_dir, SPLIT_FILES["train"])
    evaluation = read_csv(data_dir, SPLIT_FILES["val"])
    class_names = tuple(sorted({name for names in train.labels for name in names}))
    known = set(class_names)
    for row, names in enumerate(evaluation.labels):
        unknown = [name for name in names if name not in known]
        if unknown:
            raise FolderError(
                f"{os.path.join(data_dir, SPLIT_FILES['val'])}: {evaluation.paths[row]} has "
                f"label(s) {', '.join(unknown)} that no image of train.csv has (classes: "
                f"{', '.join(class_names)})")
    return MultiLabelSplits(class_names, train, evaluation,
                            os.path.join(data_dir, SPLIT_FILES["val"]))
