"""A model as a serialised `jax.export` artifact, for serving stacks that load StableHLO.

Export always uses the portable kernels (`kernels="xla"`): the CPU kernels are custom calls
that only this package's process can run. The function exported is the same one to the parity
tolerances, whatever kernels trained the weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import export

from resnet_jax.models import ResNet


def export_inference(model: ResNet, variables, batch_shape, dtype=jnp.float32) -> export.Exported:
    """`model.apply(variables, images, train=False)` for images of `batch_shape` (NHWC; the
    batch dimension may be a symbolic "b"), exported with the portable kernels."""
    portable = model.clone(kernels="xla")
    images = jax.ShapeDtypeStruct(tuple(export.symbolic_shape(str(d))[0] if isinstance(d, str)
                                        else d for d in batch_shape), dtype)
    return export.export(jax.jit(lambda v, x: portable.apply(v, x, train=False)))(
        variables, images)


def export_with_weights(model: ResNet, variables, batch_shape,
                        dtype=jnp.float32) -> export.Exported:
    """`images -> logits` with the weights inside the artifact (as constants): what a serving
    stack loads and calls with images alone. `batch_shape` as for `export_inference`."""
    portable = model.clone(kernels="xla")
    images = jax.ShapeDtypeStruct(tuple(export.symbolic_shape(str(d))[0] if isinstance(d, str)
                                        else d for d in batch_shape), dtype)
    constants = jax.tree_util.tree_map(jnp.asarray, variables)
    return export.export(jax.jit(lambda x: portable.apply(constants, x, train=False)))(images)
