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
import io
import os
import sys
import unicodedata

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
    paths, labels, seen = [], [], {}
    reader = csv.reader(io.StringIO(_text(path), newline=""))
    try:
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["path", "labels"]:
            raise FolderError(f"{path}, row 1: the header must be 'path,labels', got "
                              f"{','.join(header or [])!r}")
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue  # a blank line
            where = f"{path}, row {reader.line_num}"
            relative, names = _row(row, where)
            if relative in seen:
                raise FolderError(f"{where}: {relative} is listed twice (first in row "
                                  f"{seen[relative]})")
            seen[relative] = reader.line_num
            image = os.path.join(data_dir, relative)
            if not os.path.isfile(image):
                raise FolderError(f"{where}: {image} does not exist")
            paths.append(image)
            labels.append(names)
    except csv.Error as error:  # a field over csv's size limit, a NUL outside quotes, ...
        raise FolderError(f"{path}, row {reader.line_num}: not a CSV row ({error})") from None
    if not paths:
        raise FolderError(f"{path} lists no images")
    return LabelledImages(paths, labels)


def _text(path: str) -> str:
    """The file's text: UTF-8, with or without the byte-order mark that Excel's "CSV UTF-8"
    writes; FolderError naming the row of the first byte that is not UTF-8."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        row = data[:error.start].count(b"\n") + 1
        raise FolderError(f"{path}, row {row}: byte 0x{data[error.start]:02x} is not UTF-8; "
                          f"save the file as UTF-8 (Excel: 'CSV UTF-8')") from None


def _row(row: list[str], where: str) -> tuple[str, tuple[str, ...]]:
    """(path, sorted label names) of one row, checked."""
    if len(row) < 2:
        raise FolderError(f"{where}: expected 'path,labels', got {','.join(row)!r}")
    if any(cell.strip() for cell in row[2:]):
        raise FolderError(f"{where}: {len(row)} columns, expected 2 (path,labels): separate "
                          f"an image's labels with spaces, not commas")
    relative, names = row[0].strip(), tuple(sorted(set(row[1].split())))
    if not names:
        raise FolderError(f"{where}: {relative} has no labels (every image needs one or "
                          f"more)")
    for name in names:
        if "," in name:
            raise FolderError(f"{where}: the label {name!r} holds a comma: separate an "
                              f"image's labels with spaces")
        control = [c for c in name if unicodedata.category(c) == "Cc"]
        if control:
            raise FolderError(f"{where}: the label {name!r} holds the control character "
                              f"{control[0]!r}")
    return relative, names


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
    _warn_overlap(data_dir, train, evaluation)
    return MultiLabelSplits(class_names, train, evaluation,
                            os.path.join(data_dir, SPLIT_FILES["val"]))


def _warn_overlap(data_dir: str, train: LabelledImages, evaluation: LabelledImages) -> None:
    """A warning with the count when val.csv lists images of train.csv: its evaluation would
    not be on held-out images (allowed: a user may mean it)."""
    both = set(train.paths) & set(evaluation.paths)
    if both:
        first = min(both)
        print(f"warning: {len(both)} of the {len(evaluation.paths)} images of "
              f"{os.path.join(data_dir, SPLIT_FILES['val'])} are also in train.csv (e.g. "
              f"{first}): the evaluation is not on held-out images only", file=sys.stderr,
              flush=True)
