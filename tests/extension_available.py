"""When the CPU extension's tests run: not under RESNET_JAX_KERNELS=xla (nothing may build or
load it then), and not where it cannot be built. On linux x86_64, where the package ships its
oneDNN dependency, `test_cpu_build.py` fails instead."""

import os
import platform
import sys

import pytest

LINUX_X86_64 = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")
XLA_ONLY = os.environ.get("RESNET_JAX_KERNELS") == "xla"
XLA_ONLY_REASON = "RESNET_JAX_KERNELS=xla: the CPU extension is neither built nor loaded"


def skip_reason() -> str | None:
    if XLA_ONLY:
        return XLA_ONLY_REASON
    from resnet_jax.cpu import extension
    reason = extension.unavailable_reason()
    return None if reason is None else f"the CPU extension cannot be built here: {reason}"


def require():
    """Skips the calling test, with the reason, where the extension does not run."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
