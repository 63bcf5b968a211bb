"""The glibc allocator settings that train.py and the benchmark apply."""

import os
import subprocess
import sys

import pytest

CHECK = ("from resnet_jax.launch import host_memory; import sys; "
         "sys.exit(0 if host_memory.reuse_freed_memory() else 3)")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(env_extra, monkeypatch):
    """In a fresh interpreter: the settings are process-wide."""
    monkeypatch.setenv("PYTHONPATH", ROOT)
    for name, value in env_extra.items():
        monkeypatch.setenv(name, value)
    return subprocess.run([sys.executable, "-c", CHECK]).returncode


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")
def test_settings_apply_on_glibc_and_the_users_environment_wins(monkeypatch):
    assert _run({}, monkeypatch) == 0
    assert _run({"MALLOC_TOP_PAD_": "0"}, monkeypatch) == 3


MMAPPED_WHILE_HELD = """
import ctypes, sys
from resnet_jax.launch import host_memory
host_memory.reuse_freed_memory(single_arena={single_arena})
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):  # struct mallinfo2: hblkhd is the bytes held in mmap'd blocks
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
before = libc.mallinfo2().hblkhd
block = libc.malloc(256 * 2**20)  # larger than any mmap threshold: an XLA temporary buffer
print(libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")
@pytest.mark.parametrize("single_arena", [False, True])
def test_single_arena_serves_large_blocks_from_the_heap(single_arena, monkeypatch):
    """With single_arena (CPU compute), a 256 MB block comes from the heap, where a freed
    block stays mapped for the next step; without it, from a fresh mmap."""
    monkeypatch.setenv("PYTHONPATH", ROOT)
    for name in ("MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX", "MALLOC_TOP_PAD_"):
        monkeypatch.delenv(name, raising=False)
    out = subprocess.run([sys.executable, "-c", MMAPPED_WHILE_HELD.format(
        single_arena=single_arena)], capture_output=True, text=True, check=True).stdout
    mmapped = int(out.split()[-1])
    assert (mmapped == 0) if single_arena else (mmapped >= 256 * 2**20)


REFAULTED_AFTER_FREE = """
import ctypes, resource
from resnet_jax.launch import host_memory
host_memory.reuse_freed_memory(single_arena=True)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 1280 * 2**20  # a resnet50 training step's temporary buffer at batch 16 is 1.38 GB
def touch():
    block = libc.malloc(size)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ctypes.memset(block, 1, size)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    libc.free(block)
    return faults
print(touch(), touch())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")
def test_single_arena_keeps_a_freed_block_larger_than_a_gigabyte(monkeypatch):
    """The next step's temporary buffer reuses the pages of this step's: freeing a block at the
    heap's top must not give it back to the kernel however large (glibc trims beyond the trim
    threshold, and a resnet50 step then faulted in ~1.7 GB afresh)."""
    monkeypatch.setenv("PYTHONPATH", ROOT)
    for name in ("MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    first, second = map(int, subprocess.run(
        [sys.executable, "-c", REFAULTED_AFTER_FREE], capture_output=True, text=True,
        check=True).stdout.split())
    pages = 1280 * 2**20 // 4096
    assert first > pages // 2  # the measurement sees faults at all
    assert second < pages // 100


def test_accelerator_presence_follows_jax_platforms(monkeypatch):
    from resnet_jax.launch import host_memory
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert not host_memory.accelerator_present()
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert host_memory.accelerator_present()
