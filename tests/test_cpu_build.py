"""The contract behind every skipped CPU-extension test: where the package ships the extension's
oneDNN dependency (linux x86_64), the extension builds and loads. A broken build fails here
rather than skipping its tests."""

import pytest

from resnet_jax.cpu import extension
from tests import extension_available


@pytest.mark.skipif(not extension_available.LINUX_X86_64, reason="the package ships oneDNN "
                    "for linux x86_64 only; elsewhere the extension is optional")
@pytest.mark.skipif(extension_available.XLA_ONLY, reason=extension_available.XLA_ONLY_REASON)
def test_extension_builds_on_linux_x86_64():
    assert extension.unavailable_reason() is None
