"""TensorFlow and TensorFlow Datasets, for the host-side input pipeline and summaries only.

`tf` and `tfds` stand for the modules and import them on first use: TensorFlow takes ~8 s to
import on a 2-core CPU, most of `train.py`'s start-up, and a run that fails on a bad model name
or batch size should say so at once. TensorFlow is hidden from every GPU as it is imported,
before it can reserve accelerator memory that JAX needs; import it through here, not directly.
Its C++ start-up notices (oneDNN's "custom operations are on", absl's "log messages before
InitializeLog") are dropped: they go to stderr at every import whatever TF_CPP_MIN_LOG_LEVEL
says; TF_CPP_MIN_LOG_LEVEL=0 (or a command's --verbosity) keeps them.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable

# glog-style info and warning lines ("I0000 00:00:17... 1234 port.cc:153] ...") and absl's
# notice about them; errors (E, F) and anything else pass through.
_STARTUP_NOISE = re.compile(r"absl::InitializeLog\(\)|^[IW]\d{4} \S+\s+\d+ \S+:\d+\] ")


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
    with _startup_notices_dropped():
        module = importlib.import_module("tensorflow")
    module.config.set_visible_devices([], "GPU")
    return module


@contextlib.contextmanager
def _startup_notices_dropped():
    """What the C++ side writes to file descriptor 2 meanwhile is held in a file, then written
    to stderr without the start-up notices."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(True)
                    if not _STARTUP_NOISE.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _tensorflow_datasets():
    tf.config  # noqa: B018  (TensorFlow first: its GPUs hidden before tfds can touch them)
    return importlib.import_module("tensorflow_datasets")


tf = _ImportedOnFirstUse(_tensorflow)
tfds = _ImportedOnFirstUse(_tensorflow_datasets)
