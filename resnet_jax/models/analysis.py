"""What a model costs: variable shapes, parameter counts and forward multiply-accumulates,
all by abstract evaluation (no compile, no memory)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from resnet_jax.models.resnet import ResNet


def init_shapes(model: ResNet, image_size: int, batch_size: int = 1):
    """The variables' shapes and dtypes, by abstract evaluation (no compile, no memory)."""
    x = jax.ShapeDtypeStruct((batch_size, image_size, image_size, model.in_channels), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)


def count_params(model: ResNet, image_size: int | None = None) -> int:
    shapes = init_shapes(model, image_size or 32)
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes["params"]))


def forward_macs(model: ResNet, image_size: int) -> int:
    """Multiply-accumulates of one image's forward pass, counted over convs and the classifier.

    This is the figure torchvision documents as "GFLOPS" (e.g. 4.089 for resnet50 at 224x224);
    a training step costs about 3x the forward, and one MAC is 2 FLOPs.
    """
    macs = []

    def count(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and isinstance(module, nn.Conv):
            kernel = math.prod(module.kernel_size) * args[0].shape[-1] // module.feature_group_count
            macs.append(math.prod(out.shape[1:]) * kernel)
        elif context.method_name == "__call__" and isinstance(module, nn.Dense):
            macs.append(args[0].shape[-1] * out.shape[-1])
        return out

    x = jax.ShapeDtypeStruct((1, image_size, image_size, model.in_channels), jnp.float32)
    with nn.intercept_methods(count):
        jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    return sum(macs)
