"""TrivialAugmentWide and RandAugment (resnet_jax.data.autoaugment, TensorFlow) against
torchvision.transforms.v2 on the same uint8 images: every op at several magnitudes within +-1
pixel value, fill included; the op tables; the op/magnitude/sign sampling distribution."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from resnet_jax.data import autoaugment

torch = pytest.importorskip("torch", reason="the reference is torchvision (the [dev] extra)")
v2 = pytest.importorskip("torchvision.transforms.v2")

MAGNITUDES = {
    "Identity": [0.0], "AutoContrast": [0.0], "Equalize": [0.0],
    "ShearX": [0.5, -0.33, 0.99, -0.99], "ShearY": [0.5, -0.33, 0.99, -0.99],
    "TranslateX": [3.0, -7.9, 32.0], "TranslateY": [3.0, -7.9, 32.0],
    "Rotate": [30.0, -45.0, 90.0, -90.0, 135.0, 4.5],
    "Brightness": [0.5, -0.33, 0.99, -0.99], "Color": [0.5, -0.33, 0.99, -0.99],
    "Contrast": [0.5, -0.33, 0.99, -0.99], "Sharpness": [0.5, -0.33, 0.99, -0.99],
    "Posterize": [8.0, 5.0, 2.0], "Solarize": [1.0, 0.6, 0.05],
}
CASES = [(op, m) for op, ms in MAGNITUDES.items() for m in ms]


def _images():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)
    # smooth, low-contrast and square: a photograph-like histogram, rot90 symmetry
    y, x = np.mgrid[0:32, 0:32]
    smooth = np.stack([60 + 2 * x, 90 + y, 100 + x + y], axis=-1).astype(np.uint8)
    return {"noise": noise, "smooth": smooth}


@pytest.mark.parametrize("fill", [None, 128])
@pytest.mark.parametrize("op,magnitude", CASES)
def test_each_op_is_within_one_of_torchvision(op, magnitude, fill):
    policy = v2.TrivialAugmentWide(fill=fill)
    for name, image in _images().items():
        tensor = torch.tensor(image).permute(2, 0, 1)
        theirs = policy._apply_image_or_video_transform(
            tensor, op, float(np.float32(magnitude)), interpolation=policy.interpolation,
            fill=policy._fill).permute(1, 2, 0).numpy()
        ours = autoaugment.apply_op(tf.constant(image), op, tf.constant(magnitude, tf.float32),
                                    fill=0.0 if fill is None else fill).numpy()
        difference = np.abs(ours.astype(int) - theirs.astype(int))
        assert difference.max() <= 1, (name, op, magnitude, fill, difference.max())


@pytest.mark.parametrize("policy,cls", [("ta_wide", v2.TrivialAugmentWide),
                                        ("rand_augment", v2.RandAugment)])
def test_op_tables_equal_torchvisions(policy, cls):
    height, width = 224, 200
    ours = autoaugment.op_space(policy, height, width)
    theirs = cls._AUGMENTATION_SPACE
    assert tuple(ours) == autoaugment.OPS == tuple(theirs)
    for name, (magnitudes_fn, signed) in theirs.items():
        magnitudes = magnitudes_fn(31, height, width)
        assert ours[name][1] == signed
        if magnitudes is None:
            assert ours[name][0] is None
        else:
            np.testing.assert_array_equal(ours[name][0], magnitudes.numpy().astype(np.float32))


@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_sampling_matches_torchvisions_distribution():
    """Chi-square two-sample tests of the op and the magnitude bin, a binomial test of the
    sign of signed ops, 0.1% false-alarm rate each; 6,000 draws; fixed seeds."""
    draws, alpha = 6000, 1e-3
    sample = tf.function(lambda s: autoaugment.sample_op(s, "ta_wide", 224, 224))
    ours = [sample(tf.constant([7, i], tf.int64)) for i in range(draws)]
    ops = np.array([int(o) for o, _, _ in ours])
    bins = np.array([int(b) for _, b, _ in ours])
    negative = np.array([float(m) < 0 for _, _, m in ours])

    torch.manual_seed(0)
    policy = v2.TrivialAugmentWide()
    space = policy._AUGMENTATION_SPACE
    their_ops, their_bins = [], []
    for _ in range(draws):  # TrivialAugmentWide.forward's draws, in its order
        name, (magnitudes_fn, signed) = policy._get_random_item(space)
        their_ops.append(autoaugment.OPS.index(name))
        their_bins.append(int(torch.randint(31, ())) if magnitudes_fn(31, 1, 1) is not None
                          else -1)
        if magnitudes_fn(31, 1, 1) is not None and signed:
            torch.rand(())

    def same(ours_counts, theirs_counts):
        return stats.chi2_contingency(np.array([ours_counts, theirs_counts])).pvalue > alpha

    assert same(np.bincount(ops, minlength=14), np.bincount(their_ops, minlength=14))
    has_bins = np.array(their_bins) >= 0
    assert same(np.bincount(bins[ops_with_magnitudes(ops)], minlength=31),
                np.bincount(np.array(their_bins)[has_bins], minlength=31))
    signed_ops = np.array([autoaugment.op_space("ta_wide", 1, 1)[name][1]
                           for name in autoaugment.OPS])[ops]
    nonzero = np.array([float(m) != 0 for _, _, m in ours])
    assert stats.binomtest(int(negative[signed_ops & nonzero].sum()),
                           int((signed_ops & nonzero).sum()), 0.5).pvalue > alpha


def ops_with_magnitudes(ops):
    space = autoaugment.op_space("ta_wide", 1, 1)
    return np.array([space[autoaugment.OPS[o]][0] is not None for o in ops])


def test_policies_keep_shape_and_dtype_and_depend_only_on_the_seed():
    image = tf.constant(_images()["noise"])
    for policy in autoaugment.POLICIES:
        a = autoaugment.augment(image, tf.constant([1, 2], tf.int64), policy)
        b = autoaugment.augment(image, tf.constant([1, 2], tf.int64), policy)
        assert a.shape == image.shape and a.dtype == tf.uint8
        np.testing.assert_array_equal(a.numpy(), b.numpy())
