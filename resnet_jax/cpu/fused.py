"""The inference graph of the CPU kernels: batch norm folded into each convolution, the block's
residual addition and ReLU fused into it, weights in the layout oneDNN reads.

For evaluation, prediction, embedding and serving, a model's eval-mode batch norm is an affine
map of its convolution's output, so it folds into the convolution once, when the weights are
loaded: w' = w * s, b' = beta - mean * s, s = gamma / sqrt(var + eps) (s and b' computed in
float64 per output channel and rounded once, w * s in float32). `prepare` does that for every
convolution whose output goes straight into a batch norm (found by tracing the model, not by
names), reorders w' into the layout oneDNN's inference primitive prefers
(`extension.prepare_weights`), and returns the variables with one more collection, `fused`,
beside the unchanged `params` and `batch_stats`.

The model code does not change: with the "native" kernels a convolution that finds its
`fused` entry returns a `PendingConv`, the batch norm after it (eval mode) passes it on, and
the block's `+ shortcut` and activation complete it, so that the extension computes
relu(conv + bias + shortcut) as one oneDNN primitive with post-ops. Between those primitives
the activations stay in oneDNN's blocked layout (`Blocked`; the max pool runs on it as it is),
and become NHWC arrays where the model hands them to anything else (`as_array`: the final
pooling, feature maps, a zero-padding shortcut). Any other kernels ignore the `fused`
collection (the same variables give the same results on the portable path), and
training never sees it: `prepare` is for the inference commands only, and nothing they save
holds it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from resnet_jax.cpu import extension
from resnet_jax.cpu.norm import DeferredNorm, finished
from resnet_jax.cpu.norm import activation as native_activation
from resnet_jax.models.layers import BatchNorm

FUSED = "fused"  # the variables collection of prepared convolutions


class Blocked:
    """NHWC activations of the inference graph held in the extension's blocked layout: `data`
    is (N, C / block, H, W, block) (`extension.inference_layouts`). Read by the next
    convolution, added as a residual and max-pooled as they are; anything else reads them as
    an NHWC array."""

    def __init__(self, data):
        self.data = data

    @property
    def shape(self):
        n, blocks, h, w, block = self.data.shape
        return (n, h, w, blocks * block)

    ndim = 4

    @property
    def dtype(self):
        return self.data.dtype

    def array(self):
        n, h, w, c = self.shape
        return jnp.transpose(self.data, (0, 2, 3, 1, 4)).reshape(n, h, w, c)

    __jax_array__ = array

    def __getitem__(self, index):
        return self.array()[index]

    def __add__(self, other):
        if isinstance(other, DeferredNorm):
            return NotImplemented  # its own __radd__ fuses the addition
        return self.array() + as_array(other)

    __radd__ = __add__

    def __mul__(self, other):
        return self.array() * as_array(other)

    __rmul__ = __mul__


def as_array(x):
    """`x` as an NHWC array (the seam's `Kernels.as_array`): a `Blocked` reordered, a
    `PendingConv` computed."""
    x = finished(x)
    return x.array() if isinstance(x, Blocked) else x


def in_layout(x, block: int):
    """Activations `x` (an NHWC array or `Blocked`) as the extension's array in the layout of
    `block` (0: NHWC)."""
    if block == 0:
        return as_array(x)
    if isinstance(x, Blocked):
        return x.data
    n, h, w, c = x.shape
    return jnp.transpose(x.reshape(n, h, w, c // block, block), (0, 3, 1, 2, 4))


def activation(x):
    """ReLU, fused into a pending convolution's primitive; on the blocked layout as it is."""
    if isinstance(x, Blocked):
        return Blocked(jax.nn.relu(x.data))
    return native_activation(x)


def max_pool(x, window, strides, padding, fallback):
    """Max pool of `Blocked` activations in their layout (eval mode only: no gradient);
    anything else by `fallback`."""
    if not isinstance(x, Blocked):
        return fallback(x, window, strides, padding)
    pooled = jax.lax.reduce_window(
        x.data, -jnp.inf, jax.lax.max, (1, 1, *window, 1), (1, 1, *strides, 1),
        ((0, 0), (0, 0), *padding, (0, 0)))
    return Blocked(pooled)


class PendingConv(DeferredNorm):
    """A convolution whose batch norm is folded in, computed once its block has said what
    follows it (`+ shortcut`, then the activation)."""

    def __init__(self, x, layer: nn.Conv, prepared: dict, residual=None):
        self.x, self.layer, self.prepared, self.residual = x, layer, prepared, residual
        self._shape = extension.output_shape(x.shape, self.kernel_shape, layer.strides,
                                             layer.padding)

    @property
    def kernel_shape(self):
        kh, kw = self.layer.kernel_size
        return (kh, kw, self.x.shape[-1] // self.layer.feature_group_count, self.layer.features)

    @property
    def shape(self):
        return self._shape

    def add(self, other):
        if (self.residual is not None or tuple(other.shape) != self.shape
                or other.dtype != jnp.float32):
            return self.finish() + other  # not a form the primitive fuses
        return PendingConv(self.x, self.layer, self.prepared, residual=other)

    def finish(self, relu: bool = False):
        p, kernel_shape = self.prepared, self.kernel_shape
        src_block, dst_block = extension.inference_layouts(
            self.x.shape[-1], kernel_shape[-1], self.layer.feature_group_count)
        residual = None if self.residual is None else in_layout(self.residual, dst_block)
        y = extension.inference_forward(
            in_layout(self.x, src_block), p["weights"], p["bias"], p["layout"], kernel_shape,
            self.layer.strides, self.layer.padding, self.layer.feature_group_count,
            residual=residual, relu=relu)
        return Blocked(y) if dst_block else y


class FusableConv(nn.Conv):
    """`flax.linen.Conv`, or, where the variables hold its prepared `fused` entry (eval mode,
    after `prepare`), a `PendingConv` of it."""

    def __call__(self, inputs):
        if self.has_variable(FUSED, "weights"):
            prepared = {name: self.get_variable(FUSED, name)
                        for name in ("weights", "bias", "layout")}
            return PendingConv(finished(inputs), self, prepared)
        inputs = as_array(inputs)
        return super().__call__(inputs)


def prepare(model: nn.Module, variables: dict, image_shape) -> dict:
    """`variables` plus the `fused` collection: each convolution followed by a batch norm,
    folded and in oneDNN's layout for images of `image_shape` (H, W, C; other sizes work,
    perhaps reordered at each call). Float32 models only; others are returned unchanged."""
    if FUSED in variables:
        return variables
    pairs = _conv_norm_pairs(model, variables, (1, *image_shape))
    fused: dict = {}
    params, stats = variables["params"], variables["batch_stats"]
    for conv, norm, input_shape in pairs:
        kernel = np.asarray(_at(params, conv.path)["kernel"], np.float32)
        affine, running = _at(params, norm.path), _at(stats, norm.path)
        multiplier = (np.asarray(affine["scale"], np.float64)
                      / np.sqrt(np.asarray(running["var"], np.float64) + norm.epsilon))
        bias = (np.asarray(affine["bias"], np.float64)
                - np.asarray(running["mean"], np.float64) * multiplier)
        # The product in float32: float64 over ResNet-50's 25M weights took a second.
        weights, layout = extension.prepare_weights(
            kernel * multiplier.astype(np.float32), input_shape, conv.strides, conv.padding,
            conv.feature_group_count)
        entry = fused
        for name in conv.path:
            entry = entry.setdefault(name, {})
        entry.update(weights=weights, bias=bias.astype(np.float32),
                     layout=np.asarray([layout], np.int32))
    return {**variables, FUSED: fused}


def _at(tree: dict, path):
    for name in path:
        tree = tree[name]
    return tree


def _conv_norm_pairs(model, variables, input_shape):
    """(convolution, batch norm, the convolution's input shape) for each bias-free float32
    convolution whose output is the input of a batch norm, found by tracing `model` in eval
    mode on the portable kernels."""
    produced = {}  # id(output) -> (the output, the convolution, its input shape)
    pairs = []

    def record(next_call, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__":
            return next_call(*args, **kwargs)
        if isinstance(module, BatchNorm) and id(args[0]) in produced:
            _, conv, shape = produced[id(args[0])]
            pairs.append((conv, module, shape))
        result = next_call(*args, **kwargs)
        if (isinstance(module, nn.Conv) and not module.use_bias
                and result.dtype == jnp.float32 and module.param_dtype == jnp.float32):
            produced[id(result)] = (result, module, tuple(args[0].shape))  # kept: ids stay unique
        return result

    portable = model.clone(kernels="xla")
    image = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: portable.apply(v, x, train=False), variables, image)
    return pairs
