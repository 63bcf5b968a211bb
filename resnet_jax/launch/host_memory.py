"""Host memory allocator settings for a training or benchmark process (glibc only).

By default glibc serves every allocation above 128 KB-32 MB (a threshold it adapts) with a
fresh `mmap` and gives it back on `free`, so the next allocation of that size page-faults in
zeroed memory again. The input pipeline allocates that kind of buffer for every image and every
batch, and the page faults cost about as much as the JPEG decode. Keeping freed blocks up to
32 MB (the largest threshold glibc accepts) in the heap for reuse, and growing and shrinking
each heap in 64 MB steps rather than page by page, removes most of them (measured with
`python -m resnet_jax.bench --input_pipeline`, with and without `--default_malloc`).

When XLA computes on the CPU, its temporary buffer (hundreds of MB per training step) and the
convolutions' scratch exceed any mmap threshold, so each step still faults in fresh pages. For
CPU compute, `single_arena` also turns mmap off (M_MMAP_MAX = 0) and keeps one malloc arena
(M_ARENA_MAX = 1): per-thread arenas are mmap'd 64 MB heaps that cannot hold such blocks, and
only the main heap can keep them for reuse; and it never trims the heap (M_TRIM_THRESHOLD = -1),
because the block freed at its top is the next step's buffer (over a gigabyte for resnet50 at
batch 16). The price is one lock for all threads' allocations, which slows the input pipeline a
little: not the choice for accelerator hosts. It must be set before other threads allocate
(arenas are claimed once per thread), that is at process start. BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

MMAP_THRESHOLD = 32 * 2**20  # the largest value glibc accepts (half its 64 MB heap size)
TRIM_THRESHOLD = 1 * 2**30   # freed memory at the heap's top is returned beyond 1 GiB only
TOP_PAD = 64 * 2**20         # a heap grows by this much more than asked, and keeps it

_SETTINGS = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
             (_M_TOP_PAD, TOP_PAD))

# Applied after _SETTINGS: no trimming at all (-1), since the freed block at the heap's top is
# the next step's temporary buffer (resnet50 at batch 16: beyond TRIM_THRESHOLD).
_SINGLE_ARENA_SETTINGS = ((_M_MMAP_MAX, 0), (_M_ARENA_MAX, 1), (_M_TRIM_THRESHOLD, -1))

_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                  "MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX")


def accelerator_present() -> bool:
    """Whether JAX will likely compute on a GPU or TPU here, judged before importing it (from
    JAX_PLATFORMS, else from NVIDIA or TPU device files)."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() not in ("cpu", "")
    return bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/accel[0-9]*"))


def reuse_freed_memory(single_arena: bool | None = None) -> bool:
    """Sets glibc's mmap threshold, trim threshold and top pad, and with `single_arena` (None:
    when no accelerator is present) no mmap, one arena and no trimming (see the module
    docstring). Call it at process start, before other threads run.

    Returns whether they were set: False off glibc, or where the user set any of them through
    the environment (their choice wins).
    """
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    if single_arena is None:
        single_arena = not accelerator_present()
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = _SETTINGS + (_SINGLE_ARENA_SETTINGS if single_arena else ())
    return all([bool(mallopt(parameter, value)) for parameter, value in settings])
