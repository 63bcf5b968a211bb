"""The glibc allocator settings that train.py and the benchmark apply."""

import os
import subprocess
import sys

import pytest

CHECK = ("from resnet_jax import host_memory; import sys; "
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
