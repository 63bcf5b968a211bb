"""Which of the package's extras are installed, and the one-line error of an install that
lacks one a command needs. A leaf: imports nothing of the package but its errors, and nothing
heavy (module specs, not imports)."""

from __future__ import annotations

import importlib.util

from resnet_jax.errors import UserError

# extra -> the modules it brings that the package imports (import names, not distributions)
EXTRA_MODULES = {
    "train": ("tensorflow", "tensorflow_datasets", "array_record", "sklearn", "matplotlib",
              "tqdm"),
    "torch": ("torch", "torchvision"),
    "export": ("torch", "torchvision", "onnx", "onnxruntime"),
    "tune": ("optuna",),
    "serve": ("fastapi", "uvicorn", "multipart", "prometheus_client"),
    "ray": ("ray",),
}


def require_extra(extra: str, job: str) -> None:
    """Raises the one-line UserError of an install without `extra`, which `job` needs."""
    missing = [name for name in EXTRA_MODULES[extra] if not importable(name)]
    if missing:
        raise UserError(f"{job} needs the {extra} extra: pip install 'resnet-jax[{extra}]' "
                        f"(not installed here: {', '.join(missing)})")


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
