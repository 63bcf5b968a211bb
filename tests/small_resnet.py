"""A small ResNet from the zoo's modules, for tests that compare kernel implementations."""

import functools

import jax
import jax.numpy as jnp

from resnet_jax import models


def training_gradients(kernels: str, x, dtype=jnp.float32):
    """Parameter gradients of a cross-entropy training step on `x` (NHWC, 4 images): stem,
    basic blocks, a projection shortcut and the head, two small stages."""
    labels = jnp.arange(x.shape[0]) % 10
    model = models.ResNet(stage_sizes=(1, 1), stage_widths=(8, 16),
                          block_cls=models.BasicBlock, stem="cifar", shortcut="B",
                          num_classes=10, kernels=kernels, dtype=dtype, param_dtype=dtype)
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.PRNGKey(0), x[:1])

    def loss(params):
        logits, _ = model.apply({**variables, "params": params}, x, train=True,
                                mutable=["batch_stats"])
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(x.shape[0]), labels])

    return jax.jit(jax.grad(loss))(variables["params"])
