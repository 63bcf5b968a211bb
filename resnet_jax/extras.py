"""Which of the package's extras are installed, and the one-line error of an install that
lacks one a command needs. A leaf: imports nothing of the package but its errors, and nothing
heavy (module specs, not imports)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os

from resnet_jax.errors import UserError

# The distribution's name on the package index (pyproject.toml); the import package is
# resnet_jax. "resnet-jax" there is another project's.
DISTRIBUTION = "flax-resnets"

# extra -> the modules it brings that the package imports (import names, not distributions)
EXTRA_MODULES = {
    "train": ("tensorflow", "tensorflow_datasets", "array_record", "sklearn", "matplotlib",
              "tqdm"),
    "torch": ("torch", "torchvision"),
    "export": ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime"),
    "tune": ("optuna",),
    "serve": ("fastapi", "uvicorn", "multipart", "prometheus_client"),
    "ray": ("ray",),
}


def require_extra(extra: str, job: str) -> None:
    """Raises the one-line UserError of an install without `extra`, which `job` needs."""
    missing = [name for name in EXTRA_MODULES[extra] if not importable(name)]
    if missing:
        raise UserError(f"{job} needs the {extra} extra: {install_command(extra)} "
                        f"(not installed here: {', '.join(missing)})")


def install_command(extras: str) -> str:
    """The pip command that adds `extras` ("train", "train,serve") to this installation: by
    the distribution's name where it is installed (pip keeps the installed copy and adds the
    extras' packages), from the clone where the package runs from one uninstalled."""
    try:
        importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if os.path.isfile(os.path.join(root, "pyproject.toml")):
            return f"pip install -e '{root}[{extras}]'"
    return f"pip install '{DISTRIBUTION}[{extras}]'"


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
