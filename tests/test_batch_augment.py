"""train/batch_augment against torchvision.transforms.v2: MixUp, CutMix, RandomErasing."""

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from resnet_jax.train import batch_augment

torch = pytest.importorskip("torch", reason="the reference is torchvision (the [dev] extra)")
v2 = pytest.importorskip("torchvision.transforms.v2")


def _batch(rng, batch=6, height=7, width=9, classes=5):
    images = rng.normal(size=(batch, height, width, 3)).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    return images, labels


def _nchw(images):
    return torch.tensor(images).permute(0, 3, 1, 2)


@pytest.mark.parametrize("lam", [0.0, 0.3141, 0.75, 1.0])
def test_mixup_with_a_fixed_lambda_equals_torchvision(lam):
    images, labels = _batch(np.random.default_rng(4))
    transform = v2.MixUp(alpha=0.2, num_classes=5)
    with mock.patch.object(transform._dist, "sample", return_value=torch.tensor([lam])):
        out_images, out_labels = transform(_nchw(images), torch.tensor(labels))
    ours_images, ours_labels = batch_augment.mixup(
        jnp.asarray(images), jax.nn.one_hot(labels, 5), lam)
    np.testing.assert_array_equal(np.asarray(ours_images),
                                  out_images.permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(np.asarray(ours_labels), out_labels.numpy())


@pytest.mark.parametrize("lam,r_x,r_y", [(0.3, 4, 3), (0.9, 0, 0), (0.05, 8, 6), (0.5, 2, 5)])
def test_cutmix_with_a_fixed_lambda_and_centre_equals_torchvision(lam, r_x, r_y):
    images, labels = _batch(np.random.default_rng(5))
    transform = v2.CutMix(alpha=1.0, num_classes=5)
    centre = iter([torch.tensor([r_x]), torch.tensor([r_y])])
    with mock.patch.object(transform._dist, "sample", return_value=torch.tensor([lam])), \
            mock.patch("torch.randint", side_effect=lambda *a, **k: next(centre)):
        out_images, out_labels = transform(_nchw(images), torch.tensor(labels))
    box, lam_adjusted = batch_augment.cutmix_box(jnp.float32(lam), r_x, r_y, 7, 9)
    ours_images, ours_labels = batch_augment.cutmix(
        jnp.asarray(images), jax.nn.one_hot(labels, 5), box, lam_adjusted)
    np.testing.assert_array_equal(np.asarray(ours_images),
                                  out_images.permute(0, 2, 3, 1).numpy())
    np.testing.assert_allclose(np.asarray(ours_labels), out_labels.numpy(), rtol=1e-6)


def test_mixup_cutmix_sampling_matches_torchvision():
    """Two-sample KS tests (lambda of each, the CutMix box area) and a binomial test (the
    choice) at a 0.1% false-alarm rate each, 4,000 draws; fixed seeds, so deterministic."""
    draws, alpha = 4000, 0.001
    keys = jax.random.split(jax.random.PRNGKey(0), draws)
    sample = jax.jit(jax.vmap(lambda k: batch_augment.sample_mix(k, 224, 224, 0.2, 1.0)))
    use_cutmix, lam, r_x, r_y = (np.asarray(x) for x in sample(keys))
    torch.manual_seed(0)
    choice = v2.RandomChoice([v2.MixUp(alpha=0.2, num_classes=2),
                              v2.CutMix(alpha=1.0, num_classes=2)])
    theirs_cut = np.array([int(torch.multinomial(torch.tensor(choice.p), 1)) == 1
                           for _ in range(draws)])
    mixup_lams = np.array([float(choice.transforms[0]._dist.sample(())) for _ in range(draws)])
    cutmix_lams = np.array([float(choice.transforms[1]._dist.sample(())) for _ in range(draws)])
    assert stats.binomtest(int(use_cutmix.sum()), draws, 0.5).pvalue > alpha
    assert stats.binomtest(int(theirs_cut.sum()), draws, 0.5).pvalue > alpha
    assert stats.ks_2samp(lam[~use_cutmix], mixup_lams).pvalue > alpha
    assert stats.ks_2samp(lam[use_cutmix], cutmix_lams).pvalue > alpha
    assert stats.ks_2samp(r_x, torch.randint(224, (draws,)).numpy()).pvalue > alpha
    # and the distributions are told apart where they differ (the test has power):
    assert stats.ks_2samp(lam[~use_cutmix], cutmix_lams).pvalue < alpha


@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_random_erasing_box_and_rate_match_torchvision():
    images = np.zeros((1, 3, 32, 48), np.float32)
    draws, alpha = 3000, 0.001
    torch.manual_seed(1)
    transform = v2.RandomErasing(p=1.0)
    theirs = np.array([transform.make_params([torch.tensor(images)]) for _ in range(draws)])
    their_areas = np.array([p["h"] * p["w"] if p["v"] is not None else 0 for p in theirs])
    their_heights = np.array([p["h"] for p in theirs if p["v"] is not None])
    boxes = jax.jit(jax.vmap(lambda k: batch_augment.erasing_box(k, 32, 48)))(
        jax.random.split(jax.random.PRNGKey(1), draws))
    i, j, h, w, found = (np.asarray(x) for x in boxes)
    areas = np.where(found, h * w, 0)
    assert stats.ks_2samp(areas, their_areas).pvalue > alpha
    assert stats.ks_2samp(h[found], their_heights).pvalue > alpha
    assert np.all((i + h <= 32) & (j + w <= 48))
    # The erased region, at a fixed box, equals torchvision's F.erase.
    image = np.random.default_rng(6).normal(size=(32, 48, 3)).astype(np.float32)
    ours = batch_augment.erase(jnp.asarray(image), 3, 5, 10, 7)
    theirs_erased = v2.functional.erase(torch.tensor(image).permute(2, 0, 1), 3, 5, 10, 7,
                                        torch.tensor([0.0])[:, None, None])
    np.testing.assert_array_equal(np.asarray(ours), theirs_erased.permute(1, 2, 0).numpy())
    # p: the share of images erased.
    erased = jax.vmap(lambda k: jnp.any(batch_augment.random_erasing(
        k, jnp.ones((32, 48, 3)), 0.25) == 0))(jax.random.split(jax.random.PRNGKey(2), draws))
    assert stats.binomtest(int(np.sum(erased)), draws, 0.25 * found.mean()).pvalue > alpha
