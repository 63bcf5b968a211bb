"""The im2col-block weight gradient equals XLA's, for every convolution ResNets use."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from resnet_jax import models
from resnet_jax.cpu import conv
from tests import small_resnet

NHWC = ("NHWC", "HWIO", "NHWC")
# (input shape, kernel shape, strides, padding, groups): ResNet's stem, 3x3, strided 3x3, 1x1,
# strided 1x1 (downsample), grouped 3x3 (ResNeXt), odd sizes.
CASES = [
    ((2, 17, 23, 3), (7, 7, 3, 8), (2, 2), ((3, 3), (3, 3)), 1),
    ((4, 8, 8, 4), (3, 3, 4, 6), (1, 1), ((1, 1), (1, 1)), 1),
    ((3, 9, 11, 4), (3, 3, 4, 8), (2, 2), ((1, 1), (1, 1)), 1),
    ((2, 6, 6, 8), (1, 1, 8, 16), (1, 1), ((0, 0), (0, 0)), 1),
    ((2, 7, 7, 8), (1, 1, 8, 16), (2, 2), ((0, 0), (0, 0)), 1),
    ((2, 6, 6, 8), (3, 3, 2, 12), (1, 1), ((1, 1), (1, 1)), 4),
]


@pytest.mark.parametrize("x_shape,w_shape,strides,padding,groups", CASES)
def test_gradients_equal_xla_in_float64(x_shape, w_shape, strides, padding, groups):
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal(x_shape))
        w = jnp.asarray(rng.standard_normal(w_shape))
        numbers = lax.conv_dimension_numbers(x_shape, w_shape, NHWC)

        def loss(impl, x, w):
            y = impl(x, w, strides, padding, dimension_numbers=numbers,
                     feature_group_count=groups)
            return jnp.sum(jnp.sin(y))  # a non-trivial output gradient

        ours = jax.grad(functools.partial(loss, conv.conv_general_dilated), (0, 1))(x, w)
        xla = jax.grad(functools.partial(loss, lax.conv_general_dilated), (0, 1))(x, w)
        for a, b in zip(ours, xla):
            assert a.dtype == jnp.float64
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * float(jnp.abs(b).max()))
        np.testing.assert_array_equal(  # the forward pass is XLA's own
            conv.conv_general_dilated(x, w, strides, padding, dimension_numbers=numbers,
                                      feature_group_count=groups),
            lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=numbers,
                                     feature_group_count=groups))


def test_other_convolutions_are_left_to_lax():
    x, w = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 2))
    numbers = lax.conv_dimension_numbers(x.shape, w.shape, NHWC)
    # 'SAME' padding and dilation take lax's path: same values, and no custom_vjp in the jaxpr.
    for kwargs in ({"padding": "SAME"}, {"padding": ((2, 2), (2, 2)), "rhs_dilation": (2, 2)}):
        jaxpr = str(jax.make_jaxpr(lambda x, kwargs=kwargs: conv.conv_general_dilated(
            x, w, (1, 1), dimension_numbers=numbers, **kwargs))(x))
        assert "custom_vjp" not in jaxpr
    jaxpr = str(jax.make_jaxpr(lambda x: conv.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=numbers))(x))
    assert "custom_vjp" in jaxpr


@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_model_gradients_equal_with_either_weight_gradient():
    """A ResNet in float64 (the zoo's module, two small stages: stem, basic blocks, projection
    shortcut, head): "patches" and "xla" give the same training gradients."""
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(1).standard_normal((4, 12, 12, 3)))
        grads = {impl: small_resnet.training_gradients(impl, x, jnp.float64)
                 for impl in ("patches", "xla")}
        for a, b in zip(jax.tree_util.tree_leaves(grads["patches"]),
                        jax.tree_util.tree_leaves(grads["xla"])):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_unknown_kernels_is_refused():
    with pytest.raises(ValueError, match="kernels must be one of auto, native, patches, xla, "
                                         "got 'fast'"):
        models.create_model("resnet20", num_classes=10, kernels="fast")
