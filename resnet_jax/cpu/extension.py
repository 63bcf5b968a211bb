"""Builds, loads and calls the CPU extension `cpu_kernels.cc`: oneDNN convolutions, fused
batch norm and the max pool's gradient, as XLA FFI custom calls.

XLA:CPU runs a ResNet's convolutions with Eigen at about half oneDNN's speed (the library
PyTorch uses on the CPU), and lowers their weight gradients to a form it runs slower still.
This module compiles a small XLA FFI extension against the `onednn-cpu-gomp` wheel (a
dependency of the package) the first time it is needed, caches the shared library under
`~/.cache/resnet_jax/native/` (or under `$XDG_CACHE_HOME`), registers its handlers with
JAX and exposes them as functions of JAX arrays: `forward`, `input_gradient` and
`weight_gradient` (for kernels larger than 1x1 with >= 32 input channels, im2col blocks times
oneDNN's sgemm: faster there than its convolution kernels), for float32 NHWC inputs and HWIO
kernels (groups allowed, no dilation), and `batch_norm_train` (training-mode batch norm,
optionally with the residual addition and the ReLU after it, in the extension's own loops:
oneDNN's batch norm loses too much accuracy, see the source) and `max_pool_backward`.

Building needs a C++17 compiler (`$CXX`, else `c++`/`g++`). Where the extension cannot be
built or loaded, `unavailable_reason()` says why, and `resnet_jax.cpu` falls back to pure JAX.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile

import jax
import numpy as np

from resnet_jax import extras
from resnet_jax.errors import UserError

_SOURCE = pathlib.Path(__file__).with_name("cpu_kernels.cc")
_TARGETS = {  # FFI target name -> exported handler symbol
    "resnet_jax_onednn_conv_forward": "ResnetJaxOnednnConvForward",
    "resnet_jax_onednn_conv_input_gradient": "ResnetJaxOnednnConvInputGradient",
    "resnet_jax_onednn_conv_weight_gradient": "ResnetJaxOnednnConvWeightGradient",
    "resnet_jax_batch_norm_forward": "ResnetJaxBatchNormForward",
    "resnet_jax_batch_norm_backward": "ResnetJaxBatchNormBackward",
    "resnet_jax_max_pool_backward": "ResnetJaxMaxPoolBackward",
    "resnet_jax_onednn_conv_inference": "ResnetJaxOnednnConvInference",
}


class ExtensionUnavailable(UserError):
    """The CPU extension cannot be built or loaded here (asked for by kernels="native")."""


# oneDNN's wheels (the train extra's) exist for Linux x86_64 only; elsewhere (macOS arm64,
# Linux aarch64) the portable kernels are the plan, not a fault.
SUPPORTED_PLATFORM = sys.platform == "linux" and platform.machine() == "x86_64"


def holds_onednn(prefix: pathlib.Path) -> bool:
    """Whether `prefix` has oneDNN 3's headers and library where the build looks for them."""
    return ((prefix / "include" / "oneapi" / "dnnl" / "dnnl.hpp").exists()
            and (prefix / "lib" / "libdnnl.so.3").exists())


def _onednn_prefix() -> pathlib.Path:
    """Where the onednn wheels put `include/` and `lib/` (their data files go to the prefix)."""
    if not SUPPORTED_PLATFORM:
        raise ExtensionUnavailable(
            f"built on Linux x86_64 only (oneDNN's wheels); this is {sys.platform} "
            f"{platform.machine()}")
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        path = pathlib.Path(prefix)
        if holds_onednn(path):
            return path
    raise ExtensionUnavailable(
        f"oneDNN 3 headers and library not found under {sys.prefix}/include and /lib; "
        f"the train extra installs them: {extras.install_command('train')}")


def _compiler() -> str:
    for name in (os.environ.get("CXX"), "c++", "g++"):
        if name and shutil.which(name):
            return name
    raise ExtensionUnavailable("no C++ compiler found (set $CXX, or install g++)")


def onednn_command(source, output, *options: str,
                   prefix: pathlib.Path | None = None) -> list[str]:
    """The compiler command that builds `source` into `output` against the onednn wheels'
    headers and library, or those under `prefix` (`include/`, `lib/`), found again at run time
    through an rpath; `options` (flags, other include folders) come before the source. The
    extension and tools/conv_kernels.py use it."""
    prefix = prefix or _onednn_prefix()
    return [_compiler(), *options, f"-I{prefix / 'include'}", str(source), "-o", str(output),
            f"-L{prefix / 'lib'}", f"-Wl,-rpath,{prefix / 'lib'}", "-ldnnl"]


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return frozenset(next((line.split(":", 1)[1].split() for line in cpuinfo
                                   if line.startswith("flags")), []))
    except OSError:
        return frozenset()


def _vector_flags() -> list[str]:
    """AVX2/FMA code for the batch-norm loops where this CPU has them (part of the cache key,
    so a cache shared with an older CPU builds its own copy)."""
    return ["-mavx2", "-mfma"] if {"avx2", "fma"} <= _cpu_flags() else []


def channel_block() -> int:
    """The channels per block of the layout inference activations are kept in between the
    extension's convolutions (nChw8c, or nChw16c where oneDNN's kernels use AVX-512)."""
    return 16 if "avx512f" in _cpu_flags() else 8


def block_of(channels: int) -> int:
    """The channel block of `channels` activations between inference convolutions; 0: NHWC
    (the block does not divide them)."""
    block = channel_block()
    return block if channels % block == 0 else 0


def inference_layouts(in_channels: int, out_channels: int, groups: int) -> tuple[int, int]:
    """The channel blocks (`block_of`) of an inference convolution's input and output. Grouped
    convolutions read and write NHWC: oneDNN's blocked kernels want whole blocks per group."""
    if groups > 1:
        return 0, 0
    return block_of(in_channels), block_of(out_channels)


def _cache_dir() -> pathlib.Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(root) / "resnet_jax" / "native"


def library_path() -> pathlib.Path:
    """Builds the extension if needed and returns the path of the shared library.

    The file name holds a hash of the source, the JAX FFI headers' location and oneDNN's
    prefix, so a change to any of them builds afresh. The library is written under a temporary
    name and renamed into place: concurrent processes never load a half-written file."""
    prefix = _onednn_prefix()
    include = jax.ffi.include_dir()
    source = _SOURCE.read_bytes()
    flags = _vector_flags()
    digest = hashlib.sha256(source + f"{include}\0{prefix}\0{flags}".encode()).hexdigest()[:16]
    target = _cache_dir() / f"cpu_kernels_{digest}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so.partial", dir=target.parent)
    os.close(fd)
    # No FMA contraction: the loops round as XLA's separate multiply and add do.
    command = onednn_command(_SOURCE, partial, "-O3", "-fopenmp", "-ffp-contract=off", *flags,
                             "-std=c++17", "-shared", "-fPIC", f"-I{include}")
    try:
        built = subprocess.run(command, capture_output=True, text=True)
        if built.returncode != 0:
            last = (built.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise ExtensionUnavailable(f"building {_SOURCE.name} failed: {last}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    prune_builds(target.parent)
    return target


KEPT_BUILDS = 4


def prune_builds(directory: pathlib.Path, keep: int = KEPT_BUILDS) -> None:
    """Deletes all but the `keep` newest builds in `directory` (each source edit, JAX upgrade
    or virtual environment builds its own; a few MB each). Called after a build. A process that
    has one loaded keeps its mapping; one that wants a deleted build rebuilds it."""
    builds = sorted(directory.glob("cpu_kernels_*.so"), key=_mtime, reverse=True)
    for old in builds[keep:]:
        try:
            old.unlink()
        except OSError:  # deleted meanwhile by another process, or not ours to delete
            pass


def _mtime(path: pathlib.Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


_LIBRARY: list = []  # the loaded library, once `_load` succeeded


@functools.cache
def _load() -> str | None:
    """Builds, loads and registers the handlers once; returns why not, or None."""
    try:
        library = ctypes.CDLL(str(library_path()))
        for name, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, symbol)),
                                        platform="cpu")
    except (ExtensionUnavailable, OSError) as error:
        return str(error)
    prepare = library.ResnetJaxPrepareWeights
    prepare.restype = ctypes.c_int64
    prepare.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                        ctypes.POINTER(ctypes.c_int32)]
    _LIBRARY.append(library)
    return None


def unavailable_reason() -> str | None:
    """None when the extension can be used, else a one-line reason."""
    return _load()


def available() -> bool:
    return unavailable_reason() is None


def _ffi_call(target, result_shapes, *args, **attributes):
    reason = unavailable_reason()
    if reason is not None:
        raise ExtensionUnavailable(reason)
    results = [jax.ShapeDtypeStruct(shape, np.float32) for shape in result_shapes]
    return jax.ffi.ffi_call(target, results, vmap_method="sequential")(*args, **attributes)


def _call(target, result_shape, a, b, groups, strides, padding):
    (ph0, ph1), (pw0, pw1) = padding
    attributes = dict(groups=groups, sh=strides[0], sw=strides[1], ph0=ph0, ph1=ph1, pw0=pw0,
                      pw1=pw1)
    (result,) = _ffi_call(target, [result_shape], a, b,
                          **{k: np.int64(v) for k, v in attributes.items()})
    return result


def output_shape(x_shape, w_shape, strides, padding):
    n, h, w, _ = x_shape
    kh, kw, _, o = w_shape
    (ph0, ph1), (pw0, pw1) = padding
    return (n, (h + ph0 + ph1 - kh) // strides[0] + 1, (w + pw0 + pw1 - kw) // strides[1] + 1, o)


def forward(x, w, strides, padding, groups=1):
    """The convolution of float32 NHWC `x` with the HWIO kernel `w`."""
    return _call("resnet_jax_onednn_conv_forward",
                 output_shape(x.shape, w.shape, strides, padding), x, w, groups, strides, padding)


def input_gradient(dy, w, x_shape, strides, padding, groups=1):
    """d(loss)/d(x) from the output gradient `dy`."""
    return _call("resnet_jax_onednn_conv_input_gradient", tuple(x_shape), dy, w, groups,
                 strides, padding)


def weight_gradient(x, dy, w_shape, strides, padding, groups=1):
    """d(loss)/d(w) from the input `x` and the output gradient `dy`."""
    return _call("resnet_jax_onednn_conv_weight_gradient", tuple(w_shape), x, dy, groups,
                 strides, padding)


def batch_norm_train(x, scale, shift, epsilon, relu=False, residual=None):
    """Training-mode batch norm of float32 channels-last `x` (statistics over all axes but the
    last), with per-channel `scale` and `shift`; then `+ residual` (x's shape) if given, and a
    ReLU if `relu`: returns (output, batch mean, biased batch variance). Differentiable in x,
    scale, shift and residual through the output; the statistics are returned for the running
    averages only, and their own cotangents are ignored."""
    if residual is None:
        return _batch_norm_train(x, scale, shift, _NO_RESIDUAL, float(epsilon), bool(relu),
                                 False)
    if residual.shape != x.shape:
        raise ValueError(f"residual shape {residual.shape} differs from the input's {x.shape}")
    return _batch_norm_train(x, scale, shift, residual, float(epsilon), bool(relu), True)


_NO_RESIDUAL = np.zeros((0,), np.float32)  # the kernels' "no residual": an empty buffer


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _batch_norm_train(x, scale, shift, residual, epsilon, relu, has_residual):
    channels = (x.shape[-1],)
    return tuple(_ffi_call("resnet_jax_batch_norm_forward", [x.shape, channels, channels],
                           x, scale, shift, residual, epsilon=np.float32(epsilon), relu=relu))


def _batch_norm_train_fwd(x, scale, shift, residual, epsilon, relu, has_residual):
    y, mean, var = _batch_norm_train(x, scale, shift, residual, epsilon, relu, has_residual)
    # The backward pass reads the ReLU's mask from y (kept alive anyway as the next layer's
    # input); without a ReLU it reads nothing there, and x stands in for it.
    return (y, mean, var), (x, y if relu else x, mean, var, scale)


def _batch_norm_train_bwd(epsilon, relu, has_residual, residuals, cotangents):
    x, y, mean, var, scale = residuals
    channels = (x.shape[-1],)
    # (dx, dscale, dshift, dresidual); dresidual is empty like _NO_RESIDUAL where there is none.
    return tuple(_ffi_call(
        "resnet_jax_batch_norm_backward",
        [x.shape, channels, channels, x.shape if has_residual else _NO_RESIDUAL.shape],
        x, y, cotangents[0], mean, var, scale, epsilon=np.float32(epsilon), relu=relu))


_batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


def prepare_weights(kernel: np.ndarray, input_shape, strides, padding, groups=1):
    """The float32 HWIO `kernel` of a convolution of NHWC inputs of `input_shape`, in the
    layout oneDNN's inference primitive reads (with activations laid out as `block_of` says):
    (a flat float32 array, the layout's format tag; -1: HWIO kept). For `inference_forward`;
    done once, when a model is loaded."""
    reason = unavailable_reason()
    if reason is not None:
        raise ExtensionUnavailable(reason)
    kernel = np.ascontiguousarray(kernel, np.float32)
    output = output_shape(input_shape, kernel.shape, strides, padding)
    (ph0, ph1), (pw0, pw1) = padding
    kh, kw, _, o = kernel.shape
    geometry = np.array([*input_shape, kh, kw, o, output[1], output[2], groups, *strides, ph0,
                         ph1, pw0, pw1, *inference_layouts(input_shape[-1], o, groups)],
                        np.int64)  # cpu_kernels.cc's Geometry, then its Layouts
    prepare = _LIBRARY[0].ResnetJaxPrepareWeights
    tag = ctypes.c_int32()
    size = prepare(geometry.ctypes.data, kernel.ctypes.data, None, ctypes.byref(tag))
    if size < 0:
        raise RuntimeError(f"oneDNN has no inference convolution for {geometry.tolist()}")
    prepared = np.empty(size, np.float32)
    prepare(geometry.ctypes.data, kernel.ctypes.data, prepared.ctypes.data, ctypes.byref(tag))
    return prepared, int(tag.value)


def blocked_shape(nhwc_shape, block: int):
    """The array shape of NHWC activations of `nhwc_shape` in the layout of `block`."""
    if block == 0:
        return tuple(nhwc_shape)
    n, h, w, c = nhwc_shape
    return (n, c // block, h, w, block)


def inference_forward(x, weights, bias, layout, kernel_shape, strides, padding, groups=1,
                      residual=None, relu=False):
    """relu(conv(x, w) + bias + residual) in one oneDNN primitive, of float32 activations `x`
    laid out as `inference_layouts` says (NHWC, or (n, c / block, h, w, block)), into the
    output's layout: `weights` and `layout` from
    `prepare_weights` (of an HWIO kernel of `kernel_shape`), the per-channel `bias`, `residual`
    (the output's layout and shape) added if given, the ReLU if `relu`."""
    (ph0, ph1), (pw0, pw1) = padding
    src_block, dst_block = inference_layouts(kernel_shape[2] * groups, kernel_shape[3], groups)
    attributes = {k: np.int64(v) for k, v in dict(
        kh=kernel_shape[0], kw=kernel_shape[1], groups=groups, sh=strides[0], sw=strides[1],
        ph0=ph0, ph1=ph1, pw0=pw0, pw1=pw1, src_block=src_block, dst_block=dst_block).items()}
    n, *spatial = (x.shape[0], *x.shape[2:4]) if src_block else x.shape[:3]
    shape = blocked_shape(output_shape((n, *spatial, kernel_shape[2] * groups), kernel_shape,
                                       strides, padding), dst_block)
    if x.shape != blocked_shape((n, *spatial, kernel_shape[2] * groups), src_block):
        raise ValueError(f"input shape {x.shape} is not the layout of its {kernel_shape[2]} "
                         "channels")
    reason = unavailable_reason()
    if reason is not None:
        raise ExtensionUnavailable(reason)
    result = jax.ShapeDtypeStruct(shape, np.float32)
    if residual is None:
        call = jax.ffi.ffi_call("resnet_jax_onednn_conv_inference", result,
                                vmap_method="sequential")
        return call(x, weights, bias, _NO_RESIDUAL, layout, relu=bool(relu), **attributes)
    if residual.shape != shape:
        raise ValueError(f"residual shape {residual.shape} differs from the output's {shape}")
    # The primitive's sum post-op adds what the output buffer holds: the residual's buffer.
    call = jax.ffi.ffi_call("resnet_jax_onednn_conv_inference", result,
                            vmap_method="sequential", input_output_aliases={3: 0})
    return call(x, weights, bias, residual, layout, relu=bool(relu), **attributes)


def max_pool_backward(first, dy, x_shape, window, strides, padding):
    """The gradient of a max pool (`resnet_jax.cpu.pooling`) of float32 NHWC input of `x_shape`:
    `dy` at each output pixel goes to the input pixel at int8 offset `first` (row-major) of its
    window; window, strides and padding as (h, w) pairs, padding ((top, bottom), (left,
    right))."""
    (result,) = _ffi_call("resnet_jax_max_pool_backward", [tuple(x_shape)], first, dy,
                          kw=np.int64(window[1]), sh=np.int64(strides[0]),
                          sw=np.int64(strides[1]), top=np.int64(padding[0][0]),
                          left=np.int64(padding[1][0]))
    return result
