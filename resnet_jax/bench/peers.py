"""The peers of the JAX step in the benchmark (`resnet_jax.bench.train_step`): torchvision's
model (or the package's twin) in PyTorch, eager or `torch.compile`d, and onnxruntime on the
ONNX export of the same network. Imports torch and onnxruntime only when a row asks for them."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

import numpy as np

# torch.optim.SGD's hyper-parameters in the training rows: the JAX step's (train_step.py)
LEARNING_RATE, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4


def torch_runner(name: str, batch_size: int, image_size: int, dtype: str, mode: str,
                 num_classes: int, compiled: bool) -> tuple[Callable[[int], None], float]:
    import torch

    from resnet_jax.interop import torch_models

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()  # peak_memory_gb: this row's warm-up onwards
    model = torch_models.create_torch_model(name, num_classes=num_classes)
    if mode == "embed":
        model.fc = torch.nn.Identity()  # the pooled features
    model = model.to(device, memory_format=torch.channels_last)
    if compiled:
        model = torch.compile(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device).to(
        memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    autocast = functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16,
                                 enabled=dtype == "bfloat16")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    if mode == "train":
        model.train()

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            return loss
    else:
        model.eval()

        def step():
            with torch.inference_mode(), autocast():
                out = model(x)
                return torch.nn.functional.normalize(out) if mode == "embed" else out

    start = time.perf_counter()
    step()  # the first call compiles (torch.compile) or warms up (cuDNN autotuning, allocator)
    sync()
    compile_s = time.perf_counter() - start

    def run(n):
        for _ in range(n):
            step()
        sync()

    return run, compile_s


ONNX_ENGINES = ("onnxruntime", "onnxruntime_int8", "openvino")


def onnx_runner(engine: str, name: str, batch_size: int, image_size: int, dtype: str, mode: str,
                num_classes: int) -> tuple[Callable[[int], None], float]:
    """The same network exported to ONNX (as export.py exports it: torch.onnx from the PyTorch
    twin), run on the CPU by `engine` with its default threads: "onnxruntime"; "openvino"
    (OpenVINO's runtime compiling the same file, the `openvino` package); "onnxruntime_int8"
    (that file through onnxruntime's static quantiser as `export.py --quantize int8` makes it,
    calibrated here on the benchmark's own random input: its speed, not its accuracy, is what
    this row measures). Inference modes only."""
    import tempfile

    import torch

    from resnet_jax.interop import export, torch_models

    if mode == "train" or dtype != "float32":
        raise ValueError(f"{engine} rows are float32 inference and embedding only")
    if engine not in ONNX_ENGINES:
        raise ValueError(f"unknown ONNX engine {engine!r}")
    model = torch_models.create_torch_model(name, num_classes=num_classes).eval()
    if mode == "embed":
        model.fc = torch.nn.Identity()
    x = np.random.default_rng(0).standard_normal((batch_size, 3, image_size, image_size),
                                                 dtype=np.float32)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        export.torch_to_onnx(model, torch.from_numpy(np.repeat(x[:1], 2, axis=0)), path,
                             "output")
        if engine == "onnxruntime_int8":
            path = _int8(path, x)
        infer = _session(engine, path)
    infer(x)
    compile_s = time.perf_counter() - start

    def run(n):
        for _ in range(n):
            out = infer(x)
            if mode == "embed":
                out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)

    return run, compile_s


def _session(engine: str, path: str) -> Callable[[np.ndarray], np.ndarray]:
    """images -> output, for the model at `path` (loaded whole: the file may go away)."""
    if engine == "openvino":
        import openvino

        compiled = openvino.Core().compile_model(path, "CPU")
        request = compiled.create_infer_request()
        output = compiled.outputs[0]
        return lambda x: request.infer({0: x})[output]
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"images": x})[0]


def _int8(path: str, x: np.ndarray) -> str:
    """The int8 model of the ONNX file at `path`, beside it, as export.py makes it."""
    from resnet_jax.interop import quantize

    quantized = path[:-len(".onnx")] + ".int8.onnx"
    quantize.quantize_onnx(path, quantized, [x])
    return quantized


def torch_peak_memory_gb() -> float | None:
    import torch
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**30


