"""ResNets in JAX/Flax, numerically equal to torchvision.

Packages by concern: `models` (plain Flax), `cpu` (optional faster CPU kernels, registered with
the models' kernels seam on import), `data`, `train`, `launch`, `interop`, `bench`.
"""

from resnet_jax import cpu as _cpu  # noqa: F401  (registers the "patches"/"native"/"auto" kernels)
