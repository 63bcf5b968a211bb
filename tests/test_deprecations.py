"""No deprecated call of jax, flax, optax, orbax, tfds or torch in the package's own code.
pyproject's filterwarnings turns a DeprecationWarning raised from resnet_jax/ into an error in
every test that reaches it; these names are looked for in the source as well, since jax warns
about a deprecated name once per process (an import of orbax may have used it up before our
call), flax only says so in a comment, and tfds in a log line."""

import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "resnet_jax"

# name in the source -> its successor
DEPRECATED = {
    r"\bglobal_norm\(": "optax.tree.norm",
    r"\bSingleDeviceSharding\b": "jax.sharding.make_single_device_sharding",
    r"\bconv_general_dilated=": "nn.Conv(conv_general_dilated_cls=...)",
    r"\bmax_to_keep\b": "CheckpointManagerOptions(preservation_policy=LatestN(n))",
    r"\bitem_handlers\b": "CheckpointManager(handler_registry=...)",
    r"\bdynamo=False\b": "torch.onnx.export's dynamo exporter",
    r"\bTfDataBuilder\b": "tfds.dataset_builders.store_as_tfds_dataset",
}


@pytest.mark.parametrize("pattern", sorted(DEPRECATED))
def test_the_package_calls_no_deprecated_name(pattern):
    found = [f"{path.relative_to(PACKAGE.parent)}:{number}"
             for path in sorted(PACKAGE.rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(pattern, line)]
    assert not found, f"use {DEPRECATED[pattern]} instead: {found}"
