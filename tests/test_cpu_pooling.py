"""The CPU kernels' max pool: its gradient equals XLA's select-and-scatter and torch's
max_pool2d."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax.cpu import extension
from resnet_jax.models import kernels, pooling
from tests import extension_available

torch = pytest.importorskip("torch", reason="needs the [dev] extra (torch)")

STEM = ((3, 3), (2, 2), ((1, 1), (1, 1)))  # the ImageNet stem's pool


def pool_grad(pool, x, dy):
    return jax.grad(lambda x: jnp.sum(pool(x) * dy))(x)


@pytest.mark.parametrize("shape", [(2, 12, 12, 3), (2, 11, 9, 4)])
@pytest.mark.parametrize("window,strides,padding", [STEM, ((2, 2), (2, 2), ((0, 0), (0, 0))),
                                                    ((3, 3), (1, 1), ((1, 1), (1, 1)))])
def test_values_and_gradient_equal_xla(shape, window, strides, padding):
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal(shape))
        ours = jax.jit(lambda x: pooling.max_pool(x, window, strides, padding))
        flax = jax.jit(lambda x: nn.max_pool(x, window, strides=strides, padding=padding))
        np.testing.assert_array_equal(ours(x), flax(x))
        dy = jnp.asarray(rng.standard_normal(flax(x).shape))
        # Same routing (zeros exactly where XLA's are); a pixel that is the maximum of several
        # windows sums their gradients, in another order: float64 rounding apart.
        np.testing.assert_allclose(pool_grad(ours, x, dy), pool_grad(flax, x, dy),
                                   rtol=1e-13, atol=0)


def test_ties_send_the_gradient_to_the_first_maximum_as_torch_does():
    """Small integers make most windows hold their maximum twice or more."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, (2, 3, 10, 9)).astype(np.float64)  # NCHW
    dy_shape = (2, 3, 5, 5)
    dy = rng.standard_normal(dy_shape)
    tx = torch.from_numpy(x).requires_grad_()
    torch.nn.functional.max_pool2d(tx, 3, 2, 1).backward(torch.from_numpy(dy))
    with jax.enable_x64(True):
        ours = pool_grad(lambda x: pooling.max_pool(x, *STEM), jnp.asarray(x.transpose(0, 2, 3, 1)),
                         jnp.asarray(dy.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(ours).transpose(0, 3, 1, 2), tx.grad.numpy(),
                               rtol=1e-13, atol=0)


@pytest.mark.parametrize("shape", [(2, 12, 12, 3), (3, 11, 9, 4)])
@pytest.mark.parametrize("window,strides,padding", [STEM, ((2, 2), (2, 2), ((0, 0), (0, 0))),
                                                    ((3, 3), (1, 1), ((1, 1), (1, 1)))])
def test_native_gradient_equals_the_float64_reference(shape, window, strides, padding):
    """The CPU extension's float32 gradient: routed as the float64 select-and-scatter routes
    it (zeros in the same places), values to float32 rounding (overlapping windows sum up to
    four terms). Ties (small integers) included."""
    extension_available.require()
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, shape).astype(np.float32) + rng.choice([0, 0.5], shape)
    dy = rng.standard_normal((shape[0], *nn.max_pool(jnp.zeros(shape), window, strides,
                                                     padding).shape[1:3], shape[3]))
    native = jax.jit(lambda x: pooling.max_pool(x, window, strides, padding,
                                                      native_backward=extension.max_pool_backward))
    ours = pool_grad(native, jnp.asarray(x), jnp.asarray(dy, jnp.float32))
    assert ours.dtype == jnp.float32
    with jax.enable_x64(True):
        expected = pool_grad(lambda x: pooling.max_pool(x, window, strides, padding),
                             jnp.asarray(x, jnp.float64), jnp.asarray(dy))
    np.testing.assert_array_equal(np.asarray(ours) == 0, np.asarray(expected) == 0)
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(native(x))))(jnp.asarray(x)))
    assert "resnet_jax_max_pool_backward" in jaxpr


def test_every_kernel_set_uses_it_on_the_cpu():
    x = jnp.zeros((1, 8, 8, 2))
    for name, custom in (("patches", True), ("xla", True)):
        pool = kernels.resolve(name, jnp.float32).max_pool
        jaxpr = str(jax.make_jaxpr(lambda x, pool=pool: pool(x, (3, 3), (2, 2),
                                                             ((1, 1), (1, 1))))(x))
        assert ("custom_vjp" in jaxpr) == custom, name
