"""Augmentations applied to a whole training batch on the device, inside the jitted step, with
torchvision's semantics:

- `random_erasing` (`transforms.v2.RandomErasing(p)`, defaults scale (0.02, 0.33), ratio
  (0.3, 3.3), value 0): per example, on the normalised image (torchvision's presets erase after
  `Normalize`, so erased pixels are the dataset mean): with probability p, up to 10 tries of an
  area and a log-uniform aspect ratio, the first box that fits is set to 0; none fits: no
  erasing;
- `mixup` / `cutmix` (`v2.MixUp(alpha)` / `v2.CutMix(alpha)`, chosen per batch with equal
  probability by `v2.RandomChoice` when both are on, as torchvision's reference collate
  function does): one lambda ~ Beta(alpha, alpha) per batch; each example is mixed with the one
  before it in the batch (`roll(1)`), labels become soft targets.

Randomness: a key per step, folded from (seed, step), so batches are a function of (seed, step)
whatever the device count, and a resumed run repeats them. One lambda per *global* batch
(torchvision's DDP draws one per GPU batch); pairs are formed over the global batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from resnet_jax.plan import BatchAugment  # what to apply: the plan's spec

ERASE_SCALE = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)
ERASE_ATTEMPTS = 10


def apply(augment: BatchAugment, step, images, targets):
    """(images (B, H, W, C) normalised, targets (B, classes)) -> the augmented pair."""
    key = jax.random.fold_in(jax.random.PRNGKey(augment.seed), step)
    erase_key, mix_key = jax.random.split(key)
    if augment.random_erasing:
        keys = jax.random.split(erase_key, images.shape[0])
        images = jax.vmap(lambda k, image: random_erasing(k, image, augment.random_erasing))(
            keys, images)
    if augment.mixup_alpha or augment.cutmix_alpha:
        images, targets = mixup_or_cutmix(mix_key, images, targets, augment.mixup_alpha,
                                          augment.cutmix_alpha)
    return images, targets


# --- random erasing -------------------------------------------------------------------------

def erasing_box(key, height: int, width: int):
    """RandomErasing.make_params: (i, j, h, w, found) from up to 10 tries."""
    area_key, ratio_key, i_key, j_key = jax.random.split(key, 4)
    areas = height * width * jax.random.uniform(area_key, (ERASE_ATTEMPTS,),
                                                minval=ERASE_SCALE[0], maxval=ERASE_SCALE[1])
    log_ratio = jnp.log(jnp.asarray(ERASE_RATIO, jnp.float32))
    aspects = jnp.exp(jax.random.uniform(ratio_key, (ERASE_ATTEMPTS,), minval=log_ratio[0],
                                         maxval=log_ratio[1]))
    hs = jnp.round(jnp.sqrt(areas * aspects)).astype(jnp.int32)  # round half to even, as
    ws = jnp.round(jnp.sqrt(areas / aspects)).astype(jnp.int32)  # Python's round
    fits = (hs < height) & (ws < width)
    first = jnp.argmax(fits)
    h, w = hs[first], ws[first]
    i = jax.random.randint(i_key, (), 0, height - h + 1)
    j = jax.random.randint(j_key, (), 0, width - w + 1)
    return i, j, h, w, jnp.any(fits)


def erase(image, i, j, h, w, value=0.0):
    """F.erase: image[i:i+h, j:j+w] = value (HWC)."""
    rows = jnp.arange(image.shape[0])[:, None]
    cols = jnp.arange(image.shape[1])[None, :]
    inside = (rows >= i) & (rows < i + h) & (cols >= j) & (cols < j + w)
    return jnp.where(inside[..., None], jnp.asarray(value, image.dtype), image)


def random_erasing(key, image, probability: float):
    apply_key, box_key = jax.random.split(key)
    i, j, h, w, found = erasing_box(box_key, image.shape[0], image.shape[1])
    erased = erase(image, i, j, h, w)
    return jnp.where((jax.random.uniform(apply_key) < probability) & found, erased, image)


# --- mixup / cutmix -------------------------------------------------------------------------

def mixup(images, targets, lam):
    """v2.MixUp's transform: x.roll(1, 0) * (1 - lam) + x * lam, for images and targets."""
    def mix(x):
        return jnp.roll(x, 1, axis=0) * (1.0 - lam) + x * lam
    return mix(images), mix(targets)


def cutmix_box(lam, r_x, r_y, height: int, width: int):
    """v2.CutMix.make_params from lam and the box centre: (x1, y1, x2, y2), lam_adjusted."""
    r = 0.5 * jnp.sqrt(1.0 - lam)
    r_w_half = jnp.floor(r * width).astype(jnp.int32)
    r_h_half = jnp.floor(r * height).astype(jnp.int32)
    x1, y1 = jnp.maximum(r_x - r_w_half, 0), jnp.maximum(r_y - r_h_half, 0)
    x2, y2 = jnp.minimum(r_x + r_w_half, width), jnp.minimum(r_y + r_h_half, height)
    lam_adjusted = 1.0 - (x2 - x1) * (y2 - y1) / (width * height)
    return (x1, y1, x2, y2), lam_adjusted


def cutmix(images, targets, box, lam_adjusted):
    """v2.CutMix's transform: the box of each image from the one before it (roll(1))."""
    x1, y1, x2, y2 = box
    rows = jnp.arange(images.shape[1])[:, None]
    cols = jnp.arange(images.shape[2])[None, :]
    inside = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
    mixed = jnp.where(inside[None, :, :, None], jnp.roll(images, 1, axis=0), images)
    rolled_targets = jnp.roll(targets, 1, axis=0)
    return mixed, rolled_targets * (1.0 - lam_adjusted) + targets * lam_adjusted


def sample_mix(key, height: int, width: int, mixup_alpha: float, cutmix_alpha: float):
    """(use_cutmix, lam, r_x, r_y): RandomChoice([MixUp, CutMix]) and the chosen one's
    draws."""
    choice_key, lam_key, x_key, y_key = jax.random.split(key, 4)
    if mixup_alpha and cutmix_alpha:
        use_cutmix = jax.random.bernoulli(choice_key)
    else:
        use_cutmix = jnp.asarray(bool(cutmix_alpha))
    alpha = jnp.where(use_cutmix, cutmix_alpha or 1.0, mixup_alpha or 1.0)
    lam = jax.random.beta(lam_key, alpha, alpha)
    return (use_cutmix, lam, jax.random.randint(x_key, (), 0, width),
            jax.random.randint(y_key, (), 0, height))


def mixup_or_cutmix(key, images, targets, mixup_alpha: float, cutmix_alpha: float):
    use_cutmix, lam, r_x, r_y = sample_mix(key, images.shape[1], images.shape[2], mixup_alpha,
                                           cutmix_alpha)
    mixed_images, mixed_targets = mixup(images, targets, lam)
    box, lam_adjusted = cutmix_box(lam, r_x, r_y, images.shape[1], images.shape[2])
    cut_images, cut_targets = cutmix(images, targets, box, lam_adjusted)
    return (jnp.where(use_cutmix, cut_images, mixed_images),
            jnp.where(use_cutmix, cut_targets, mixed_targets))
