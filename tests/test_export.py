"""Models built with default options export with `jax.export`, serialised and back, and the
exported function equals `model.apply`; so do models that trained with the CPU kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from resnet_jax.interop.export import export_inference
from resnet_jax.models import create_model
from tests import extension_available


@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_resnet18_with_defaults_exports_and_round_trips():
    model = create_model("resnet18", num_classes=10)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
    exported = export.export(jax.jit(lambda v, x: model.apply(v, x, train=False)))(
        variables, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
    restored = export.deserialize(exported.serialize())
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    np.testing.assert_array_equal(restored.call(variables, x),
                                  jax.jit(lambda v, x: model.apply(v, x, train=False))(
                                      variables, x))


@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_a_model_on_the_cpu_kernels_exports_through_the_portable_ones():
    """A model on the CPU extension's kernels (custom calls) exports all the same, with a
    symbolic batch size; logits equal the extension's to float32 accuracy."""
    kernels = "native" if extension_available.skip_reason() is None else "patches"
    model = create_model("resnet8", num_classes=10, kernels=kernels)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False)
    exported = export.deserialize(
        export_inference(model, variables, ("b", 16, 16, 3)).serialize())
    assert "custom_call @resnet_jax_" not in exported.mlir_module()  # the extension's targets
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 16, 3))
    np.testing.assert_allclose(exported.call(variables, x),
                               model.apply(variables, x, train=False), rtol=1e-5, atol=1e-5)
