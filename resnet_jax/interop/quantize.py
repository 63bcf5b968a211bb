"""An int8 ONNX model for CPU deployment, made by onnxruntime's static quantiser and checked on
the run's own data.

`export.py --format onnx --quantize int8` writes the float32 model (`export.write_onnx`, checked
against our logits), then quantises it with `onnxruntime.quantization.quantize_static`: QDQ
format, int8 weights per output channel, uint8 activations whose ranges are calibrated (MinMax)
on a fixed sample of the run's training images, read with the run's own evaluation
preprocessing. Weights use 7 of their 8 bits (`reduce_range`): on AVX2 CPUs without VNNI,
onnxruntime's uint8 x int8 kernels (VPMADDUBSW) can saturate with full-range weights, which
costs accuracy (onnxruntime's quantisation guide); a VNNI or AMX machine runs the same model
without that risk. The command then classifies the run's evaluation split with both models and
reports each one's top-1 and throughput here.
"""

from __future__ import annotations

import os
import time

import numpy as np

from resnet_jax.errors import UserError

CALIBRATION_IMAGES = 300
BATCH = 16
METHOD = ("onnxruntime static quantisation (quantize_static): QDQ, int8 weights per output "
          "channel with reduce_range (7 bits), uint8 activations, MinMax calibration")


def images_of(run) -> tuple[list[str], list[str], np.ndarray]:
    """(training image paths, evaluation image paths, evaluation labels) of a run on image
    folders; UserError for any other run (the calibration reads the run's own files)."""
    from resnet_jax.data import folders

    spec = run.plan.data
    if spec.dataset != "folder" or run.contract.task.name != "classification":
        raise UserError(f"--quantize int8 calibrates on the run's training images and reports "
                        f"its top-1: a single-label run on image folders (dataset=folder); "
                        f"this run's dataset is {spec.dataset!r}")
    splits = folders.read_splits(spec.data_dir, spec.holdout_fraction, spec.eval_split,
                                 spec.max_image_pixels, check=False)
    if tuple(splits.class_names) != tuple(run.class_names):
        raise UserError(f"the classes in {spec.data_dir} are not the run's: the calibration and "
                        f"the check need the run's own data")
    return list(splits.train.paths), list(splits.eval.paths), np.asarray(splits.eval.labels)


def _inputs(run, paths: list[str]) -> np.ndarray:
    """The ONNX model's input for `paths`: normalised float32 NCHW."""
    mean, std = (np.asarray(v, np.float32) for v in run.contract.normalization)
    pixels = np.stack([run.contract.read_image(p) for p in paths]).astype(np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(0, 3, 1, 2))


def quantize(run, float_path: str, int8_path: str, train_paths: list[str],
             count: int = CALIBRATION_IMAGES) -> int:
    """Writes the int8 model of `float_path` to `int8_path`, calibrated on `count` of the
    training images (a fixed sample across the split); returns how many it used."""
    chosen = sorted(np.random.default_rng(0).permutation(len(train_paths))[:count])
    paths = [train_paths[i] for i in chosen]
    quantize_onnx(float_path, int8_path,
                  (_inputs(run, paths[s:s + BATCH]) for s in range(0, len(paths), BATCH)))
    return len(paths)


def quantize_onnx(float_path: str, int8_path: str, batches) -> None:
    """The int8 model (METHOD) of the ONNX file at `float_path`, written to `int8_path`, its
    activations calibrated on `batches` (an iterable of the model's "images" inputs, read once).
    The benchmark's int8 row quantises through here too."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    prepared = int8_path + ".prepared.onnx"
    try:
        quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
        quantize_static(prepared, int8_path, Batches(), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        for leftover in (prepared, prepared + ".data"):
            if os.path.exists(leftover):
                os.remove(leftover)


def compare(run, float_path: str, int8_path: str, eval_paths: list[str],
            labels: np.ndarray) -> dict:
    """Top-1 and images/s of both models on the evaluation images, batches of BATCH, one
    thread pool each as onnxruntime sets it (the images are read once, before timing)."""
    import onnxruntime

    inputs = [_inputs(run, eval_paths[s:s + BATCH]) for s in range(0, len(eval_paths), BATCH)]
    result = {"eval_images": len(eval_paths)}
    for name, path in (("float32", float_path), ("int8", int8_path)):
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        session.run(None, {"images": inputs[0]})  # warm-up: allocations, kernel choice
        start = time.perf_counter()
        predicted = np.concatenate([session.run(None, {"images": x})[0].argmax(-1)
                                    for x in inputs])
        seconds = time.perf_counter() - start
        result[f"top1_{name}"] = float(np.mean(predicted == labels))
        result[f"images_per_s_{name}"] = len(eval_paths) / seconds
    return result
