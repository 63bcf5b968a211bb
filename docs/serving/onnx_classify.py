"""Classifies image files with an ONNX export of a run and nothing of resnet-jax: onnxruntime,
NumPy, Pillow and the sidecar OUTPUT.json that export.py writes beside the model.

    python onnx_classify.py mine.onnx photo.jpg [more.jpg ...]

Prints one JSON object per image, in the shape `predict.py --json` prints: {"path", "top_k":
[{"class", "probability"}]} (a multi-label run: {"path", "labels": [...]}, every class at or
above the run's threshold). The preprocessing is the run's evaluation's, written out: RGB, the
shorter side resized (Pillow's antialiased bilinear), the centre crop, (pixels - mean) / std.
"""

import json
import sys

import numpy as np
import onnxruntime
from PIL import Image


def pixels(path: str, pre: dict) -> np.ndarray:
    """One image file -> float32 (3, H, W), normalised as the run's evaluation does."""
    image = Image.open(path).convert("RGB")
    resize, (crop_h, crop_w) = pre["resize_shorter_side"], pre["center_crop"]
    width, height = image.size
    if width <= height:  # torchvision's Resize(int): the longer side int(resize * long / short)
        size = (resize, int(resize * height / width))
    else:
        size = (int(resize * width / height), resize)
    if size != image.size:
        image = image.resize(size, Image.BILINEAR)
    top, left = round((size[1] - crop_h) / 2), round((size[0] - crop_w) / 2)
    array = np.zeros((crop_h, crop_w, 3), np.float32)  # zeros where the image is too small
    crop = np.asarray(image, np.float32)[max(top, 0):top + crop_h, max(left, 0):left + crop_w]
    array[:crop.shape[0], :crop.shape[1]] = crop
    array = (array - np.float32(pre["mean"])) / np.float32(pre["std"])
    return array.transpose(2, 0, 1)  # NCHW, the ONNX model's layout


def main(model_path: str, paths: list[str], top_k: int = 5) -> None:
    meta = json.load(open(model_path + ".json"))  # classes, task, preprocessing
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    images = np.stack([pixels(p, meta["preprocessing"]) for p in paths])
    logits = session.run(None, {"images": images})[0].astype(np.float64)
    classes = meta["classes"]
    for path, row in zip(paths, logits):
        if meta.get("output") == "sigmoid per class":  # a multi-label run
            p = 1 / (1 + np.exp(-row))
            answer = {"labels": [{"class": classes[i], "probability": float(p[i])}
                                 for i in np.argsort(-p, kind="stable")
                                 if p[i] >= meta["threshold"]]}
        else:
            p = np.exp(row - row.max())
            p /= p.sum()
            answer = {"top_k": [{"class": classes[i], "probability": float(p[i])}
                                for i in np.argsort(-p, kind="stable")[:top_k]]}
        print(json.dumps({"path": path, **answer}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
