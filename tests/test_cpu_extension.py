"""The CPU extension (resnet_jax.cpu.extension, an XLA FFI extension: oneDNN convolutions, batch
norm, max-pool gradient) equals XLA, and the kernels seam selects it as documented."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from resnet_jax import models
from resnet_jax.cpu import conv as conv_ops
from resnet_jax.cpu import extension
from resnet_jax.models import kernels
from tests import extension_available, small_resnet
from tests.closeness import assert_trees_close, relative_error

NHWC = ("NHWC", "HWIO", "NHWC")

# (batch, height, width, in, out, kernel, stride, groups): every convolution form the zoo
# uses, at small sizes, plus odd sizes where the strided window does not cover the input.
CASES = [
    (2, 15, 13, 3, 8, 7, 2, 1),    # ImageNet stem
    (3, 9, 9, 6, 8, 3, 1, 1),      # basic block 3x3
    (3, 9, 10, 6, 8, 3, 2, 1),     # strided 3x3, odd width
    (2, 10, 10, 8, 16, 1, 2, 1),   # projection shortcut 1x1/2
    (2, 7, 7, 8, 12, 1, 1, 1),     # bottleneck 1x1
    (2, 8, 8, 16, 16, 3, 1, 4),    # ResNeXt grouped 3x3
    (2, 9, 9, 16, 32, 3, 2, 8),    # grouped, strided
    # >= 32 input channels, kernel > 1x1: the weight gradient is the extension's im2col blocks
    (3, 13, 11, 32, 8, 3, 1, 1),   # 429 pixels: one full 256-pixel block, one partial
    (2, 15, 14, 32, 16, 3, 2, 1),  # strided, odd height
]


def xla_conv(x, w, stride, padding, groups):
    return lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=NHWC,
                                    feature_group_count=groups,
                                    precision=lax.Precision.HIGHEST)


@pytest.fixture(autouse=True)
def require_extension():
    extension_available.require()


@pytest.mark.parametrize("n,h,w,cin,cout,k,stride,groups", CASES)
def test_forward_and_gradients_equal_xla(n, h, w, cin, cout, k, stride, groups):
    """float32 oneDNN against a float64 XLA reference, at float32's accuracy (1e-6 relative;
    XLA's own float32 result is checked to the same bound, so the bound is not loose)."""
    _check_against_float64(n, h, w, cin, cout, k, stride, groups,
                           ((k // 2, k // 2), (k // 2, k // 2)))


@pytest.mark.parametrize("cin", [8, 32])  # oneDNN's weight gradient, the im2col blocks'
def test_uneven_padding(cin):
    """Explicit padding that differs per side (the models pad k // 2 on every side, but the
    drop-in takes any): both weight-gradient paths, and the forward and input gradients."""
    _check_against_float64(2, 11, 12, cin, 8, 3, 2, 1, ((0, 2), (2, 1)))


def _check_against_float64(n, h, w, cin, cout, k, stride, groups, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h, w, cin))
    kernel = rng.standard_normal((k, k, cin // groups, cout))
    with jax.enable_x64(True):
        y64, vjp64 = jax.vjp(functools.partial(xla_conv, stride=stride, padding=padding,
                                               groups=groups), x, kernel)
        dy = rng.standard_normal(y64.shape)
        dx64, dw64 = vjp64(dy)
        reference = [np.asarray(a) for a in (y64, dx64, dw64)]
    x32, k32, dy32 = (jnp.asarray(a, jnp.float32) for a in (x, kernel, dy))
    ours = jax.jit(lambda x, w, dy: (
        extension.forward(x, w, (stride, stride), padding, groups),
        extension.input_gradient(dy, w, x.shape, (stride, stride), padding, groups),
        extension.weight_gradient(x, dy, w.shape, (stride, stride), padding, groups)))(
            x32, k32, dy32)
    y32, vjp32 = jax.vjp(functools.partial(xla_conv, stride=stride, padding=padding,
                                           groups=groups), x32, k32)
    xla = (y32, *vjp32(dy32))
    for name, a, b, ref in zip(("forward", "input gradient", "weight gradient"), ours, xla,
                               reference):
        assert a.dtype == jnp.float32 and a.shape == ref.shape, name
        assert relative_error(b, ref) < 1e-6, f"XLA's float32 {name}"
        assert relative_error(a, ref) < 1e-6, f"oneDNN's {name}"


def test_custom_vjp_drop_in_gives_xla_gradients():
    """`native_conv_general_dilated` as flax calls it: value and both gradients."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 4, 8)), jnp.float32)

    def loss(conv, x, w):
        y = conv(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC)
        return jnp.sum(jnp.sin(y))

    ours = jax.jit(jax.value_and_grad(functools.partial(
        loss, conv_ops.native_conv_general_dilated), argnums=(0, 1)))(x, w)
    xla = jax.value_and_grad(functools.partial(loss, functools.partial(
        lax.conv_general_dilated, precision=lax.Precision.HIGHEST)), argnums=(0, 1))(x, w)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(xla)):
        assert relative_error(a, b) < 1e-5
    jaxpr = str(jax.make_jaxpr(functools.partial(
        loss, conv_ops.native_conv_general_dilated))(x, w))
    assert "resnet_jax_onednn_conv_forward" in jaxpr


def test_other_dtypes_and_forms_fall_back():
    """float64 (the parity tests' dtype) and SAME padding are not oneDNN's: same values as lax,
    no custom call."""
    with jax.enable_x64(True):
        x = jnp.ones((1, 6, 6, 2), jnp.float64)
        w = jnp.ones((3, 3, 2, 4), jnp.float64)
        jaxpr = str(jax.make_jaxpr(lambda x, w: conv_ops.native_conv_general_dilated(
            x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC))(x, w))
        assert "onednn" not in jaxpr
    x, w = x.astype(jnp.float32), w.astype(jnp.float32)
    same = conv_ops.native_conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)
    np.testing.assert_array_equal(same, lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                                 dimension_numbers=NHWC))


def test_kernel_names_select_the_implementation(monkeypatch):
    """"auto" on the CPU: native for float32 on one device, else the patches (these tests run
    with 2 simulated CPU devices, see conftest); RESNET_JAX_KERNELS says what "auto" means;
    explicit names are honoured."""
    monkeypatch.delenv("RESNET_JAX_KERNELS", raising=False)
    assert kernels.resolve("native", jnp.float32).convolution is \
        conv_ops.native_conv_general_dilated
    assert kernels.resolve("native", jnp.float64).name == "patches"
    assert kernels.resolve("patches", jnp.float32).convolution is \
        conv_ops.conv_general_dilated
    assert kernels.resolve("xla", jnp.float32) is kernels.XLA
    assert jax.device_count() > 1 and jax.default_backend() == "cpu"
    assert kernels.resolve("auto", jnp.float32).name == "patches"
    monkeypatch.setenv("RESNET_JAX_KERNELS", "xla")
    assert kernels.resolve("auto", jnp.float32) is kernels.XLA
    monkeypatch.setenv("RESNET_JAX_KERNELS", "fast")
    with pytest.raises(ValueError, match="RESNET_JAX_KERNELS='fast' is not a kernels name"):
        kernels.resolve("auto", jnp.float32)


def test_unavailable_extension_is_a_clear_error_or_a_warned_fallback(monkeypatch):
    from resnet_jax import cpu

    def missing():
        raise extension.ExtensionUnavailable("no C++ compiler found (set $CXX, or install g++)")

    def clear_caches():
        extension._load.cache_clear()
        cpu._extension_or_warn.cache_clear()
        kernels._resolve.cache_clear()

    try:
        with monkeypatch.context() as patch:
            patch.setattr(extension, "_compiler", missing)
            patch.setenv("XDG_CACHE_HOME", "/nonexistent-cache-for-this-test")
            patch.delenv("RESNET_JAX_KERNELS", raising=False)
            patch.setattr(jax, "device_count", lambda *a: 1)
            clear_caches()
            assert extension.unavailable_reason() == ("no C++ compiler found (set $CXX, or "
                                                      "install g++)")
            with pytest.raises(extension.ExtensionUnavailable,
                               match="kernels='native': no C\\+\\+ compiler found"):
                kernels.resolve("native", jnp.float32)
            with pytest.warns(UserWarning, match="the CPU extension is unavailable \\(no C"):
                chosen = kernels.resolve("auto", jnp.float32)
            assert chosen.name == "patches"
    finally:
        clear_caches()
    assert extension.available()  # loads and registers again from the built library


def test_old_builds_are_pruned_to_the_newest_few(tmp_path):
    for age in range(7):
        build = tmp_path / f"cpu_kernels_{age:016x}.so"
        build.write_bytes(b"")
        os.utime(build, (1e9 - age, 1e9 - age))
    (tmp_path / "unrelated.so").write_bytes(b"")
    extension.prune_builds(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cpu_kernels_0000000000000000.so", "cpu_kernels_0000000000000001.so",
        "cpu_kernels_0000000000000002.so", "unrelated.so"]


@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_model_gradients_through_the_extension_equal_xla():
    """A small ResNet (stem, basic blocks, projection shortcut, head) in float32: oneDNN's
    training gradients equal XLA's to float32 accuracy."""
    x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 12, 12, 3)), jnp.float32)
    assert_trees_close(small_resnet.training_gradients("native", x),
                       small_resnet.training_gradients("xla", x), 1e-4)


@pytest.mark.parametrize("relu,residual", [(False, False), (True, False), (True, True),
                                           (False, True)])
@pytest.mark.parametrize("shape", [(4, 5, 6, 16), (3, 7, 3, 5), (2, 40, 1, 3)])
def test_batch_norm_kernels_equal_the_float64_reference(shape, relu, residual):
    """Output, batch statistics and gradients of the native batch norm (+ residual, + ReLU)
    in float32, against XLA in float64, at float32's accuracy. Activations offset from zero,
    so a one-pass variance would fail the bound; rows not a multiple of the kernels' 32-row
    blocks ((3, 7, 3): 63), and several blocks ((2, 40, 1): 80)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape) * 2 + 5
    scale = rng.uniform(0.5, 1.5, shape[-1])
    shift = rng.uniform(-1, 1, shape[-1])
    shortcut = rng.standard_normal(shape) if residual else None
    dy = rng.standard_normal(shape)

    def reference(x, scale, shift, shortcut):
        mean = jnp.mean(x, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
        y = (x - mean) * lax.rsqrt(var + 1e-5) * scale + shift
        if shortcut is not None:
            y = y + shortcut
        return (jax.nn.relu(y) if relu else y), mean, var

    def native(x, scale, shift, shortcut):
        return extension.batch_norm_train(x, scale, shift, 1e-5, relu, shortcut)

    def loss(norm, x, scale, shift, shortcut):
        y, _, _ = norm(x, scale, shift, shortcut)
        return jnp.sum(y * dy.astype(y.dtype))

    argnums = (0, 1, 2, 3) if residual else (0, 1, 2)
    with jax.enable_x64(True):
        expected = reference(x, scale, shift, shortcut)
        expected_grads = jax.grad(functools.partial(loss, reference), argnums)(
            x, scale, shift, shortcut)
    args32 = [None if a is None else jnp.asarray(a, jnp.float32)
              for a in (x, scale, shift, shortcut)]
    outputs = jax.jit(native)(*args32)
    grads = jax.jit(jax.grad(functools.partial(loss, native), argnums))(*args32)
    names = ("y", "mean", "var", "dx", "dscale", "dshift", "dresidual")
    for name, a, b in zip(names, (*outputs, *grads), (*expected, *expected_grads)):
        assert a.dtype == jnp.float32 and a.shape == b.shape, name
        assert relative_error(a, b) < 2e-6, name


def test_batch_norm_rejects_a_residual_of_another_shape():
    x = jnp.ones((2, 3, 3, 4))
    with pytest.raises(ValueError, match="residual shape"):
        extension.batch_norm_train(x, jnp.ones(4), jnp.zeros(4), 1e-5, True, x[:1])


@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_model_batch_stats_through_native_kernels_equal_xla():
    """A training step's outputs and running statistics: "native" kernels (batch norm fused
    with the residual addition and ReLU) against XLA's."""
    x = jnp.asarray(np.random.default_rng(4).standard_normal((4, 12, 12, 3)), jnp.float32)
    results = {}
    for impl in ("native", "xla"):
        model = models.create_model("resnet20", num_classes=10, kernels=impl)
        variables = model.init(jax.random.PRNGKey(0), x[:1], train=False)
        results[impl] = jax.jit(functools.partial(model.apply, train=True,
                                                  mutable=["batch_stats"]))(variables, x)
    assert_trees_close(results["native"], results["xla"], 1e-5)
    jaxpr = str(jax.make_jaxpr(functools.partial(
        models.create_model("resnet20", num_classes=10, kernels="native").apply, train=True,
        mutable=["batch_stats"]))(variables, x))
    assert "resnet_jax_batch_norm_forward" in jaxpr
