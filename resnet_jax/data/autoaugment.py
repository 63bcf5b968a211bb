"""TrivialAugmentWide and RandAugment on uint8 (H, W, 3) images in TensorFlow, op for op as
`torchvision.transforms.v2` computes them on uint8 tensors (`_auto_augment.py` and
`functional/_color.py`, `_geometry.py`): the same op set, magnitude bins and signs, the same
arithmetic (float32, truncating casts, PIL's equalize LUT), affine ops through the same inverse
matrix and nearest-neighbour sampling grid (`_affine_grid` + `grid_sample`, align_corners=False)
with `fill` outside the image. Randomness is stateless, from a seed per example (the stream
position's), so training batches stay a function of (seed, step).

Ops (name -> magnitudes over `num_bins` bins, signed?): `op_space(policy, height, width)`.
"""

from __future__ import annotations

import math

import numpy as np

from resnet_jax.data.lazy_tf import tf
from resnet_jax.errors import UserError

NUM_BINS = 31
POLICIES = ("ta_wide", "rand_augment")
OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
       "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")


def check_policy(name: str) -> None:
    """UserError for a name that is neither "" (off) nor a policy."""
    if name not in ("", *POLICIES):
        raise UserError(f"unknown auto_augment {name!r}; valid: '', {', '.join(POLICIES)}")


def _linspace(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace in float32 exactly as its CPU kernel computes it: a float32 step, the
    first half as start + step * i and the second as end - step * (steps - 1 - i), each with
    one rounding (fused multiply-add)."""
    f32 = np.float32
    step = np.float64(f32((f32(end) - f32(start)) / f32(steps - 1)))
    i = np.arange(steps)
    values = np.where(i < steps // 2, np.float64(f32(start)) + step * i,
                      np.float64(f32(end)) - step * (steps - 1 - i))
    return values.astype(f32)


def op_space(policy: str, height: int, width: int, num_bins: int = NUM_BINS):
    """{op: (magnitudes (num_bins,) float32 or None, signed)} of torchvision's
    TrivialAugmentWide (ta_wide) or RandAugment (rand_augment) _AUGMENTATION_SPACE."""
    posterize_levels = 6 if policy == "ta_wide" else 4
    posterize = (8 - np.round(np.arange(num_bins, dtype=np.float32)
                              / np.float32((num_bins - 1) / posterize_levels))).astype(np.float32)
    if policy == "ta_wide":
        shear, translate_x, translate_y, rotate, color = 0.99, 32.0, 32.0, 135.0, 0.99
    else:
        shear, rotate, color = 0.3, 30.0, 0.9
        translate_x, translate_y = 150.0 / 331.0 * width, 150.0 / 331.0 * height
    return {
        "Identity": (None, False),
        "ShearX": (_linspace(0.0, shear, num_bins), True),
        "ShearY": (_linspace(0.0, shear, num_bins), True),
        "TranslateX": (_linspace(0.0, translate_x, num_bins), True),
        "TranslateY": (_linspace(0.0, translate_y, num_bins), True),
        "Rotate": (_linspace(0.0, rotate, num_bins), True),
        "Brightness": (_linspace(0.0, color, num_bins), True),
        "Color": (_linspace(0.0, color, num_bins), True),
        "Contrast": (_linspace(0.0, color, num_bins), True),
        "Sharpness": (_linspace(0.0, color, num_bins), True),
        "Posterize": (posterize, False),
        "Solarize": (_linspace(1.0, 0.0, num_bins), False),
        "AutoContrast": (None, False),
        "Equalize": (None, False),
    }


# --- colour ops (uint8 in, uint8 out) --------------------------------------------------------

def _to_uint8(x):
    """torch's `.clamp_(0, 255).to(uint8)`: clamp, then truncate."""
    return tf.cast(tf.clip_by_value(x, 0.0, 255.0), tf.uint8)


def _blend(image, other, ratio):
    """`_blend`: image * ratio + other * (1 - ratio), clamped, truncated."""
    ratio = tf.cast(ratio, tf.float32)
    return _to_uint8(tf.cast(image, tf.float32) * ratio + other * (1.0 - ratio))


def _grayscale(image):
    """`_rgb_to_grayscale_image(preserve_dtype=False)` floored (uint8 input): (H, W, 1)."""
    x = tf.cast(image, tf.float32)
    gray = x[..., 0] * 0.2989 + x[..., 1] * 0.587 + x[..., 2] * 0.114
    return tf.floor(gray)[..., None]


def brightness(image, factor):
    return _to_uint8(tf.cast(image, tf.float32) * tf.cast(factor, tf.float32))


def saturation(image, factor):
    return _blend(image, _grayscale(image), factor)


def contrast(image, factor):
    return _blend(image, tf.reduce_mean(_grayscale(image)), factor)


def _sharpened(image, factor):
    """Interior pixels: blend with the 3x3 (1, 5 in the centre)/13 blur, rounded; borders
    kept."""
    x = tf.cast(image, tf.float32)
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = tf.constant([[a, a, a], [a, b, a], [a, a, a]], tf.float32)
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    blurred = tf.round(tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], "VALID")[0])
    inner = x[1:-1, 1:-1]
    inner = inner + (1.0 - tf.cast(factor, tf.float32)) * (blurred - inner)
    padded = tf.pad(inner, [[1, 1], [1, 1], [0, 0]])
    border = tf.pad(tf.ones_like(inner, tf.bool), [[1, 1], [1, 1], [0, 0]])
    return _to_uint8(tf.where(border, padded, x))


def sharpness(image, factor):
    """torchvision leaves images of 2 pixels or fewer across as they are."""
    small = (tf.shape(image)[0] <= 2) | (tf.shape(image)[1] <= 2)
    return tf.cond(small, lambda: image, lambda: _sharpened(image, factor))


def posterize(image, bits):
    bits = tf.cast(bits, tf.int32)
    mask = tf.cast(tf.bitwise.left_shift(tf.bitwise.left_shift(1, bits) - 1, 8 - bits),
                   tf.uint8)
    return tf.where(bits >= 8, image, tf.bitwise.bitwise_and(image, mask))


def solarize(image, magnitude):
    threshold = 255.0 * tf.cast(magnitude, tf.float32)
    return tf.where(tf.cast(image, tf.float32) >= threshold, 255 - image, image)


def autocontrast(image):
    x = tf.cast(image, tf.float32)
    low = tf.reduce_min(x, axis=(0, 1), keepdims=True)
    high = tf.reduce_max(x, axis=(0, 1), keepdims=True)
    equal = tf.equal(high, low)
    inv_scale = tf.where(equal, 1.0, (high - low) * (1.0 / 255.0))
    low = tf.where(equal, 0.0, low)
    return _to_uint8((x - low) / inv_scale)


def _equalize_channel(channel):
    flat = tf.reshape(tf.cast(channel, tf.int32), [-1])
    hist = tf.math.bincount(flat, minlength=256, maxlength=256, dtype=tf.int32)
    cum = tf.cumsum(hist)
    last = tf.argmax(cum, output_type=tf.int32)  # first index of the maximum: the last value
    step = (tf.size(flat) - hist[last]) // 255
    lut = tf.clip_by_value((cum[:-1] + step // 2) // tf.maximum(step, 1), 0, 255)
    lut = tf.concat([[0], lut], axis=0)
    equalized = tf.cast(tf.gather(lut, tf.cast(channel, tf.int32)), tf.uint8)
    return tf.where(step == 0, channel, equalized)


def equalize(image):
    return tf.stack([_equalize_channel(image[..., c]) for c in range(3)], axis=-1)


# --- geometric ops (nearest neighbour, `fill` outside) ----------------------------------------

def inverse_affine_matrix(center, angle, translate, shear):
    """`_get_inverse_affine_matrix(center, angle, translate, scale=1, shear)` in float64."""
    f64 = tf.float64
    rot = tf.cast(angle, f64) * (math.pi / 180.0)
    sx, sy = (tf.cast(s, f64) * (math.pi / 180.0) for s in shear)
    cx, cy = (tf.cast(c, f64) for c in center)
    tx, ty = (tf.cast(t, f64) for t in translate)
    cos_sy, tan_sx = tf.cos(sy), tf.tan(sx)
    rot_minus_sy = rot - sy
    a = tf.cos(rot_minus_sy) / cos_sy
    b = -(a * tan_sx + tf.sin(rot))
    c = tf.sin(rot_minus_sy) / cos_sy
    d = tf.cos(rot) - c * tan_sx
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return [m0, m1, m2, m3, m4, m5]


def warp(image, matrix, fill):
    """`_affine_grid` + `grid_sample(mode="nearest", align_corners=False)`: output pixel
    (x, y) takes the input pixel nearest to the inverse-mapped point; outside: `fill`."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    theta = [tf.cast(m, tf.float32) for m in matrix]
    xs = tf.range(w, dtype=tf.float32) + (1.0 - w) * 0.5
    ys = tf.range(h, dtype=tf.float32) + (1.0 - h) * 0.5
    grid_x, grid_y = xs[None, :], ys[:, None]
    gx = grid_x * (theta[0] / (0.5 * w)) + grid_y * (theta[1] / (0.5 * w)) + theta[2] / (0.5 * w)
    gy = grid_x * (theta[3] / (0.5 * h)) + grid_y * (theta[4] / (0.5 * h)) + theta[5] / (0.5 * h)
    ix = tf.round(((gx + 1.0) * w - 1.0) / 2.0)  # nearbyint: half to even, as tf.round
    iy = tf.round(((gy + 1.0) * h - 1.0) / 2.0)
    inside = (ix >= 0) & (ix <= w - 1) & (iy >= 0) & (iy <= h - 1)
    ix = tf.clip_by_value(tf.cast(ix, tf.int32), 0, width - 1)
    iy = tf.clip_by_value(tf.cast(iy, tf.int32), 0, height - 1)
    sampled = tf.gather_nd(image, tf.stack([iy, ix], axis=-1))
    fill = tf.cast(tf.broadcast_to(tf.cast(fill, tf.float32), [3]), tf.float32)
    return tf.where(inside[..., None], sampled, tf.cast(tf.round(fill), tf.uint8)[None, None])


def shear_x(image, magnitude, fill):
    h, w = tf.cast(tf.shape(image)[0], tf.float64), tf.cast(tf.shape(image)[1], tf.float64)
    degrees = tf.atan(tf.cast(magnitude, tf.float64)) * (180.0 / math.pi)
    return warp(image, inverse_affine_matrix((-w * 0.5, -h * 0.5), 0.0, (0.0, 0.0),
                                             (degrees, 0.0)), fill)


def shear_y(image, magnitude, fill):
    h, w = tf.cast(tf.shape(image)[0], tf.float64), tf.cast(tf.shape(image)[1], tf.float64)
    degrees = tf.atan(tf.cast(magnitude, tf.float64)) * (180.0 / math.pi)
    return warp(image, inverse_affine_matrix((-w * 0.5, -h * 0.5), 0.0, (0.0, 0.0),
                                             (0.0, degrees)), fill)


def translate(image, dx, dy, fill):
    """translate=[int(dx), int(dy)] (truncated, as torchvision's int())."""
    dx, dy = (tf.cast(tf.cast(v, tf.int32), tf.float64) for v in (dx, dy))
    return warp(image, inverse_affine_matrix((0.0, 0.0), 0.0, (dx, dy), (0.0, 0.0)), fill)


def rotate(image, angle, fill):
    angle = tf.math.floormod(tf.cast(angle, tf.float64), 360.0)  # angle % 360, as Python's
    return tf.cond(tf.equal(angle, 0.0), lambda: image, lambda: warp(
        image, inverse_affine_matrix((0.0, 0.0), -angle, (0.0, 0.0), (0.0, 0.0)), fill))


def apply_op(image, op: str, magnitude, fill=0.0):
    """torchvision's `_apply_image_or_video_transform(image, op, magnitude)` on uint8 HWC."""
    if op == "Identity":
        return image
    if op == "ShearX":
        return shear_x(image, magnitude, fill)
    if op == "ShearY":
        return shear_y(image, magnitude, fill)
    if op == "TranslateX":
        return translate(image, magnitude, 0.0, fill)
    if op == "TranslateY":
        return translate(image, 0.0, magnitude, fill)
    if op == "Rotate":
        return rotate(image, magnitude, fill)
    if op == "Brightness":
        return brightness(image, 1.0 + magnitude)
    if op == "Color":
        return saturation(image, 1.0 + magnitude)
    if op == "Contrast":
        return contrast(image, 1.0 + magnitude)
    if op == "Sharpness":
        return sharpness(image, 1.0 + magnitude)
    if op == "Posterize":
        return posterize(image, tf.cast(magnitude, tf.int32))
    if op == "Solarize":
        return solarize(image, magnitude)
    if op == "AutoContrast":
        return autocontrast(image)
    if op == "Equalize":
        return equalize(image)
    raise ValueError(f"unknown op {op}")


# --- the policies -----------------------------------------------------------------------------

def sample_op(seed, policy: str, height: int, width: int, magnitude_bin=None):
    """(op index, magnitude) drawn as torchvision draws them: an op uniformly; a magnitude bin
    uniformly (TrivialAugmentWide) or the fixed `magnitude_bin` (RandAugment); a sign by
    rand() <= 0.5 for signed ops. Stateless from `seed` (shape [2] int)."""
    space = op_space(policy, height, width)
    seeds = tf.random.experimental.stateless_split(seed, 3)
    op = tf.random.stateless_uniform([], seeds[0], 0, len(OPS), tf.int32)
    bin_index = (tf.random.stateless_uniform([], seeds[1], 0, NUM_BINS, tf.int32)
                 if magnitude_bin is None else tf.constant(magnitude_bin, tf.int32))
    table = np.stack([space[name][0] if space[name][0] is not None
                      else np.zeros(NUM_BINS, np.float32) for name in OPS])
    signed = tf.constant([space[name][1] for name in OPS])
    magnitude = tf.gather(tf.gather(tf.constant(table), op), bin_index)
    negative = signed[op] & (tf.random.stateless_uniform([], seeds[2]) <= 0.5)
    return op, bin_index, tf.where(negative, -magnitude, magnitude)


def _apply_sampled(image, op, magnitude, fill):
    branches = [lambda name=name: apply_op(image, name, magnitude, fill) for name in OPS]
    return tf.switch_case(op, branches)


def augment(image, seed, policy: str, num_ops: int = 2, magnitude_bin: int = 9,
            fill: float = 0.0):
    """`policy` (ta_wide: one op; rand_augment: `num_ops` ops at `magnitude_bin`) on a uint8
    (H, W, 3) image of static size."""
    height, width = image.shape[0], image.shape[1]
    if policy == "ta_wide":
        op, _, magnitude = sample_op(seed, policy, height, width)
        return tf.ensure_shape(_apply_sampled(image, op, magnitude, fill), image.shape)
    for k in range(num_ops):
        op, _, magnitude = sample_op(tf.random.experimental.stateless_fold_in(seed, k), policy,
                                     height, width, magnitude_bin)
        image = tf.ensure_shape(_apply_sampled(image, op, magnitude, fill), image.shape)
    return image


def after(preprocess_train, policy: str, num_ops: int, magnitude: int):
    """`preprocess_train` followed, as torchvision's presets do (RandomResizedCrop, flip, then
    the policy), by TrivialAugmentWide or RandAugment on its uint8 crop, seeded by the
    example's position."""
    def preprocess(example, rng):
        out = preprocess_train(example, rng)
        seed = tf.random.experimental.stateless_fold_in(rng, 1)
        return {**out, "image": augment(out["image"], seed, policy, num_ops, magnitude)}
    return preprocess
