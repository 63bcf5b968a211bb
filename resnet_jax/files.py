"""Writing files whole or not at all: the one writer for config.json, classes.txt, metrics,
reports, exports, prepared-dataset records and benchmark results. A leaf: imports nothing
from the package."""

from __future__ import annotations

import contextlib
import os


def write_atomically(path: str, data: str | bytes) -> None:
    """Writes `data` to `path` whole or not at all: a temporary file beside it, then a rename.
    A crash leaves the previous file (or none), never a half-written one; a failed write
    removes its temporary file."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:  # a full disk, a signal: no half-written file left beside it
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
