"""TensorFlow and TensorFlow Datasets, for the host-side input pipeline and summaries only.

`tf` and `tfds` stand for the modules and import them on first use: TensorFlow takes ~8 s to
import on a 2-core CPU, most of `train.py`'s start-up, and a run that fails on a bad model name
or batch size should say so at once. TensorFlow is hidden from every GPU as it is imported,
before it can reserve accelerator memory that JAX needs; import it through here, not directly.
"""

from __future__ import annotations

import importlib
import threading
from typing import Callable


class _ImportedOnFirstUse:
    """Stands for the module that `load()` returns, called on first attribute access."""

    _lock = threading.RLock()  # reentrant: loading tfds loads tf first

    def __init__(self, load: Callable):
        self._load, self._module = load, None

    def __getattr__(self, attribute):
        with self._lock:
            if self._module is None:
                self._module = self._load()
        return getattr(self._module, attribute)


def _tensorflow():
    module = importlib.import_module("tensorflow")
    module.config.set_visible_devices([], "GPU")
    return module


def _tensorflow_datasets():
    tf.config  # noqa: B018  (TensorFlow first: its GPUs hidden before tfds can touch them)
    return importlib.import_module("tensorflow_datasets")


tf = _ImportedOnFirstUse(_tensorflow)
tfds = _ImportedOnFirstUse(_tensorflow_datasets)
