"""Optimizer and schedules: hand-computed values, and torch.optim.SGD step for step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resnet_jax import plan as plans
from resnet_jax.configs import cifar10_resnet20, default, imagenet_resnet50
from resnet_jax.tasks.classification import cross_entropy
from resnet_jax.train import optim, steps


def test_paper_piecewise_schedule():
    config = cifar10_resnet20.get_config()
    schedule = optim.create_schedule(plans.build(config).schedule, steps_per_epoch=50_000 / 128,
                                     total_steps=64_000)
    for step, lr in [(0, 0.1), (31_999, 0.1), (32_000, 0.01), (47_999, 0.01), (48_000, 0.001),
                     (63_999, 0.001)]:
        assert float(schedule(step)) == pytest.approx(lr, rel=1e-6), step


def test_warmup_cosine_with_linear_batch_scaling():
    config = imagenet_resnet50.get_config()  # batch 1024, lr 0.1 x 1024/256, 5 warm-up epochs
    assert plans.build(config).schedule.peak == pytest.approx(0.4)
    steps_per_epoch, total = 1000.0, 90_000
    schedule = optim.create_schedule(plans.build(config).schedule, steps_per_epoch, total)
    warmup = 5000
    assert float(schedule(0)) == 0.0
    assert float(schedule(warmup // 2)) == pytest.approx(0.2, rel=1e-6)
    assert float(schedule(warmup)) == pytest.approx(0.4, rel=1e-6)
    midpoint = warmup + (total - warmup) // 2
    assert float(schedule(midpoint)) == pytest.approx(0.2, rel=1e-4)  # cos(pi/2): half way
    assert float(schedule(total)) == pytest.approx(0.0, abs=1e-8)


def test_piecewise_in_epochs_after_warmup():
    config = default.get_config()
    config.update(schedule="piecewise", lr_boundaries_epochs=(30, 60), warmup_epochs=1.0,
                  learning_rate=0.1, lr_scaling_batch_size=0)
    schedule = optim.create_schedule(plans.build(config).schedule, steps_per_epoch=10.0,
                                     total_steps=900)
    assert [round(float(schedule(s)), 8) for s in (5, 10, 299, 300, 599, 600)] == [
        0.05, 0.1, 0.1, 0.01, 0.01, 0.001]


def test_sgd_step_by_hand_with_decay_mask():
    params = {"conv": {"kernel": jnp.full((1, 1, 1, 2), 2.0)}, "bn": {"scale": jnp.ones(2)}}
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.5), params)
    tx = optim.sgd(0.1, momentum=0.9, weight_decay=0.01, decay_mask=optim.decay_mask(params))
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)  # buf = g + wd*p (kernel only)
    np.testing.assert_allclose(updates["conv"]["kernel"], -0.1 * (0.5 + 0.01 * 2.0), rtol=1e-6)
    np.testing.assert_allclose(updates["bn"]["scale"], -0.1 * 0.5, rtol=1e-6)
    updates, _ = tx.update(grads, state, params)  # buf = 0.9 * buf + g
    np.testing.assert_allclose(updates["bn"]["scale"], -0.1 * (0.9 * 0.5 + 0.5), rtol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_equals_torch_sgd(nesterov):
    torch = pytest.importorskip("torch")
    rng = np.random.RandomState(0)
    init = {"w": rng.randn(3, 4), "b": rng.randn(4)}
    grads_seq = [{"w": rng.randn(3, 4), "b": rng.randn(4)} for _ in range(5)]
    lrs = [0.1, 0.1, 0.05, 0.05, 0.01]

    torch_params = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    opt = torch.optim.SGD(torch_params.values(), lr=0.1, momentum=0.9, weight_decay=1e-4,
                          nesterov=nesterov)
    with jax.enable_x64(True):
        schedule = optax.piecewise_constant_schedule(0.1, {2: 0.5, 4: 0.2})
        tx = optim.sgd(schedule, momentum=0.9, nesterov=nesterov, weight_decay=1e-4)
        params = jax.tree_util.tree_map(jnp.asarray, init)
        state = tx.init(params)
        for grads, lr in zip(grads_seq, lrs):
            for group in opt.param_groups:
                group["lr"] = lr
            for k, p in torch_params.items():
                p.grad = torch.tensor(grads[k])
            opt.step()
            updates, state = tx.update(jax.tree_util.tree_map(jnp.asarray, grads), state, params)
            params = optax.apply_updates(params, updates)
            for k in init:
                np.testing.assert_allclose(params[k], torch_params[k].detach().numpy(),
                                           rtol=1e-13, atol=1e-15)


def test_label_smoothing_cross_entropy_equals_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.RandomState(0)
    logits, labels = rng.randn(6, 5).astype(np.float32), rng.randint(0, 5, 6)
    ours = cross_entropy(jnp.asarray(logits), jnp.asarray(labels), 5, 0.1)
    theirs = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels),
                                               label_smoothing=0.1)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-6)


@pytest.mark.parametrize("soft", [False, True])
def test_class_weighted_cross_entropy_equals_torch(soft):
    """class_weights=balanced: torch's CrossEntropyLoss(weight=..., label_smoothing=...), with
    class indices and with soft targets (mixup's)."""
    torch = pytest.importorskip("torch")
    from resnet_jax import tasks

    rng = np.random.RandomState(1)
    logits = rng.randn(7, 4).astype(np.float32)
    labels = rng.randint(0, 4, 7)
    targets = np.eye(4, dtype=np.float32)[labels]
    if soft:
        targets = 0.7 * targets + 0.3 * np.roll(targets, 1, axis=0)
    task = tasks.Classification(0.1, balanced=True).for_data([10, 3, 1, 6])
    np.testing.assert_allclose(task.weights, [20 / 40, 20 / 12, 20 / 4, 20 / 24])
    ours = task.loss(jnp.asarray(logits), jnp.asarray(targets if soft else labels))
    theirs = torch.nn.functional.cross_entropy(
        torch.tensor(logits), torch.tensor(targets) if soft else torch.tensor(labels),
        weight=torch.tensor(task.weights, dtype=torch.float32), label_smoothing=0.1)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-6)


@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_the_jitted_train_step_traces_once_over_several_steps():
    """The state a step returns has the avals of the state it took (no weak types, no dtype
    drift), so jit traces the step once: a loop over steps never recompiles."""
    import functools

    import chex
    import jax.numpy as jnp
    import optax

    from resnet_jax import models

    model = models.ResNet(stage_sizes=(1, 1), stage_widths=(8, 16), block_cls=models.BasicBlock,
                          stem="cifar", num_classes=10)
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
    # as the loop makes it: jitted (its step counter an array, as a restored one is)
    state = jax.jit(functools.partial(steps.create_train_state, model, tx, (8, 8, 3)))(
        jax.random.PRNGKey(0))

    @chex.assert_max_traces(n=1)
    def train_step(state, batch):
        return steps.train_step(state, batch)

    step = jax.jit(train_step, donate_argnums=0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        before = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
        batch = {"image": jnp.asarray(rng.standard_normal((4, 8, 8, 3)), jnp.float32),
                 "label": jnp.asarray(rng.integers(0, 10, 4), jnp.int32)}
        state, sums = step(state, batch)
        chex.assert_trees_all_equal_shapes_and_dtypes(before, state)
        chex.assert_tree_all_finite(state.params)
    assert int(state.step) == 3
