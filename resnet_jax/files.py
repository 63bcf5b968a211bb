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


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(name: str) -> str:
    """`name` (a file or class name) for a line of plain output: control characters and line
    separators escaped (\\n, \\t, \\x1b, \\u2028), so that one record stays one line. JSON output
    escapes them itself."""
    import unicodedata

    return "".join(
        _ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in name)
