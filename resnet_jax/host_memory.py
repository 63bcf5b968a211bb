"""Host memory allocator settings for a training or benchmark process (glibc only).

By default glibc serves every allocation above 128 KB-32 MB (a threshold it adapts) with a
fresh `mmap` and gives it back on `free`, so the next allocation of that size page-faults in
zeroed memory again. The input pipeline allocates that kind of buffer for every image and every
batch: measured on the 2-core machine, ~450 page faults and ~1.3 ms of kernel time per
ImageNet-size training image, as much as the JPEG decode itself. Keeping freed blocks up to
32 MB (the largest threshold glibc accepts) in the heap for reuse, and growing and shrinking
each heap in 64 MB steps rather than page by page, removes most of it (measured with
`python -m resnet_jax.benchmark --input_pipeline`, with and without `--default_malloc`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2**20  # the largest value glibc accepts (half its 64 MB heap size)
TRIM_THRESHOLD = 1 * 2**30   # freed memory at the heap's top is returned beyond 1 GiB only
TOP_PAD = 64 * 2**20         # a heap grows by this much more than asked, and keeps it

_SETTINGS = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
             (_M_TOP_PAD, TOP_PAD))

_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def reuse_freed_memory() -> bool:
    """Sets glibc's mmap threshold, trim threshold and top pad (see the module docstring).

    Returns whether they were set: False off glibc, or where the user set any of them through
    the environment (their choice wins).
    """
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all([bool(mallopt(parameter, value)) for parameter, value in _SETTINGS])
