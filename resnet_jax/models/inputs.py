"""The model's input on the device: images as they are, or uint8 pixels normalised there."""

from __future__ import annotations

import jax.numpy as jnp


def normalize_images(images, normalization):
    """`images` as they are (normalization None), or uint8 pixels as (pixels - mean) / std per
    channel in float32, fused by XLA into the first layer's input."""
    if normalization is None:
        return images
    mean, std = (jnp.asarray(values, jnp.float32) for values in normalization)
    return (images.astype(jnp.float32) - mean) / std
