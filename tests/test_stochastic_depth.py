"""Stochastic depth (drop_path_rate): timm's rates, whole examples dropped, rate zero bitwise
the plain step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax.plan import StepSpec
from resnet_jax.train import optim


def test_stochastic_depth_rates_follow_timms_linear_rule():
    from resnet_jax.models import resnet
    # timm resnet.py make_blocks: block_dpr = drop_path_rate * net_block_idx / (net_num_blocks - 1)
    assert resnet.drop_path_rates(16, 0.05) == [0.05 * k / 15 for k in range(16)]


def test_drop_path_keeps_each_example_whole_or_drops_it_and_keeps_the_mean():
    from flax import linen as nn

    from resnet_jax.models import blocks

    class Branch(nn.Module):
        rate: float

        @nn.compact
        def __call__(self, x):
            return blocks.drop_path(self, x, self.rate)

    x = jnp.asarray(np.random.default_rng(7).normal(size=(4000, 3, 3, 2)), jnp.float32)
    out = Branch(0.3).apply({}, x, rngs={"dropout": jax.random.PRNGKey(0)})
    kept = np.asarray(jnp.all(out != 0, axis=(1, 2, 3)))
    np.testing.assert_allclose(np.asarray(out)[kept], np.asarray(x)[kept] / np.float32(0.7),
                               rtol=1e-6)
    assert np.all(np.asarray(out)[~kept] == 0)
    # Keep rate 0.7 (binomial test, 0.1% false alarm): E[out] = x.
    from scipy import stats
    assert stats.binomtest(int(kept.sum()), len(kept), 0.7).pvalue > 1e-3
    assert Branch(0.0).apply({}, x) is x


@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_stochastic_depth_at_rate_zero_is_bitwise_the_plain_training_step():
    from resnet_jax import models
    from resnet_jax.train import steps

    images = jnp.asarray(np.random.default_rng(8).normal(size=(4, 8, 8, 3)), jnp.float32)
    batch = {"image": images, "label": jnp.arange(4) % 3}
    results = []
    for model, seed in ((models.create_model("resnet8", num_classes=3, in_channels=3), None),
                        (models.create_model("resnet8", num_classes=3, in_channels=3,
                                             drop_path_rate=0.0), 5)):
        tx = optim.sgd(0.1)
        state = steps.create_train_state(model, tx, (8, 8, 3), jax.random.PRNGKey(0))
        results.append(jax.jit(lambda s, b, seed=seed: steps.train_step(
            s, b, spec=StepSpec(dropout_seed=seed)))(
            state, batch)[0])
    for a, b in zip(jax.tree_util.tree_leaves(results[0]), jax.tree_util.tree_leaves(results[1])):
        np.testing.assert_array_equal(a, b)
    # ...and at rate 0.5 the step differs (the rng reaches the blocks).
    model = models.create_model("resnet8", num_classes=3, in_channels=3, drop_path_rate=0.5)
    state = steps.create_train_state(model, optim.sgd(0.1), (8, 8, 3), jax.random.PRNGKey(0))
    dropped = jax.jit(lambda s, b: steps.train_step(s, b, spec=StepSpec(dropout_seed=5)))(
        state, batch)[0]
    assert not np.array_equal(dropped.params["fc"]["kernel"], results[0].params["fc"]["kernel"])
