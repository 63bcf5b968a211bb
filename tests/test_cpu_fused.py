"""The CPU extension's inference graph (`resnet_jax.cpu.fused`): batch norm folded into the
convolutions, residual addition and ReLU fused into them, activations in oneDNN's blocked
layout between them. It must compute what the unfused eval-mode model computes, within float32
rounding, for every architecture the zoo builds; the parity tests (test_parity.py) hold it to
torchvision itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from resnet_jax import models
from resnet_jax.models import kernels as kernel_seam
from tests import extension_available
from tests.closeness import relative_error

pytestmark = pytest.mark.skipif(extension_available.skip_reason() is not None,
                                reason=str(extension_available.skip_reason()))

# Folding rounds w * s once instead of rounding conv(x, w) * s: ~1e-6 relative per layer.
RTOL = 2e-5


def random_statistics(variables, seed=0):
    """The variables with non-trivial running statistics and affine parameters, so that
    folding has something to fold."""
    rng = np.random.default_rng(seed)

    def perturb(path, value):
        name = path[-1].key
        if name == "mean":
            return rng.normal(0, 0.2, value.shape).astype(np.float32)
        if name == "var":
            return rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        if name in ("scale", "bias") and value.ndim == 1:
            return (np.asarray(value) + rng.normal(0, 0.2, value.shape)).astype(np.float32)
        return np.asarray(value)

    return jax.tree_util.tree_map_with_path(perturb, variables)


def model_and_variables(name, size, **options):
    model = models.create_model(name, kernels="native", **{"num_classes": 10, **options})
    x = jax.random.normal(jax.random.key(0), (2, *size, 3))
    variables = random_statistics(model.init(jax.random.key(1), x[:1], train=False))
    return model, variables, x


SLOW = pytest.mark.slow  # ~9-13 s each on 2 cores: the full suite runs them, the lanes do not


@pytest.mark.parametrize("name,size,options", [
    pytest.param("resnet18", (37, 45), {}, id="resnet18", marks=SLOW),  # basic blocks, odd
    pytest.param("resnet50", (40, 48), {}, id="resnet50", marks=SLOW),  # bottlenecks
    pytest.param("resnext50_32x4d", (32, 32), {}, id="resnext", marks=SLOW),  # grouped: NHWC
    pytest.param("resnet20", (17, 23), {}, id="resnet20", marks=SLOW),  # zero-pad shortcut
    pytest.param("plain18", (32, 32), {}, id="plain18"),                 # no shortcuts
    pytest.param("resnet18", (32, 32), {"head": "mlp", "head_hidden": 12}, id="mlp-head"),
    pytest.param("resnet18", (32, 32), {"num_classes": 0}, id="pooled"),  # pooled features
    pytest.param("resnet18", (33, 29), {"num_classes": 0, "features_only": True},
                 id="feature-maps"),
])
def test_fused_graph_computes_what_the_unfused_model_computes(name, size, options):
    model, variables, x = model_and_variables(name, size, **options)
    prepared = kernel_seam.for_inference(model, variables, (*size, 3))
    assert "fused" in prepared
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    expected, got = apply(variables, x), apply(prepared, x)
    for e, g in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(got)):
        assert e.shape == g.shape
        assert relative_error(g, e) < RTOL


def test_other_kernels_ignore_the_prepared_collection_and_training_refuses_it():
    model, variables, x = model_and_variables("resnet18", (32, 32))
    prepared = kernel_seam.for_inference(model, variables, (32, 32, 3))
    assert kernel_seam.for_inference(model, prepared, (32, 32, 3)) is prepared
    portable = model.clone(kernels="xla")
    assert kernel_seam.for_inference(portable, variables, (32, 32, 3)) is variables
    np.testing.assert_array_equal(portable.apply(prepared, x, train=False),
                                  portable.apply(variables, x, train=False))
    with pytest.raises(RuntimeError, match="prepared for inference"):
        model.apply(prepared, x, train=True, mutable=["batch_stats"])


def reference(x, w, bias, strides, padding, groups, residual, relu):
    y = lax.conv_general_dilated(x, w, strides, padding, feature_group_count=groups,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                 precision=lax.Precision.HIGHEST) + bias
    if residual is not None:
        y = y + residual
    return jnp.maximum(y, 0) if relu else y


@pytest.mark.parametrize("c,o,k,stride,groups,residual,relu", [
    (3, 16, 7, 2, 1, False, True),    # the stem: NHWC images into blocked output
    (16, 16, 3, 1, 1, True, True),    # blocked in and out, residual, ReLU
    (16, 32, 1, 2, 1, False, False),  # strided projection
    (8, 12, 3, 1, 1, True, False),    # output channels the block does not divide: NHWC
    (16, 16, 3, 1, 4, True, True),    # grouped: NHWC
])
def test_inference_convolution_equals_lax(c, o, k, stride, groups, residual, relu):
    from resnet_jax.cpu import extension, fused

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 11, 13, c)).astype(np.float32)
    w = rng.standard_normal((k, k, c // groups, o)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    pad = ((k // 2, k // 2),) * 2
    out_shape = extension.output_shape(x.shape, w.shape, (stride, stride), pad)
    r = rng.standard_normal(out_shape).astype(np.float32) if residual else None
    weights, layout = extension.prepare_weights(w, x.shape, (stride, stride), pad, groups)
    src_block, dst_block = extension.inference_layouts(c, o, groups)

    def run(x, r):
        y = extension.inference_forward(
            fused.in_layout(x, src_block), weights, bias, np.asarray([layout], np.int32),
            w.shape, (stride, stride), pad, groups,
            residual=None if r is None else fused.in_layout(r, dst_block), relu=relu)
        y = fused.as_array(fused.Blocked(y)) if dst_block else y
        return y, None if r is None else r * 1.0  # the residual must survive the aliasing

    y, r_after = jax.jit(run)(x, r)
    expected = reference(x, w, bias, (stride, stride), pad, groups, r, relu)
    assert y.shape == expected.shape
    assert relative_error(y, expected) < 1e-5
    if residual:
        np.testing.assert_array_equal(r_after, r)
