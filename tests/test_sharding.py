"""Data-parallel maths on 2 simulated devices (see conftest.py): global batch norm, batch-norm
groups against pmap's per-device statistics, gradient accumulation against the large batch.

In float64, so that a wrong reduction shows and a reordered one does not.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resnet_jax import models
from resnet_jax.launch import sharding
from resnet_jax.plan import StepSpec
from resnet_jax.tasks.classification import cross_entropy
from resnet_jax.train import steps
from tests import closeness

BATCH, IMAGE = 32, (8, 8, 1)


def simulated_devices():
    if jax.device_count() < 2:
        pytest.fail("conftest.py simulates 4 CPU devices; XLA_FLAGS overrides that")
    return jax.devices()[:2]


def make_state(tx, **model_options):
    # A two-stage CIFAR-style ResNet from the zoo's own module (stem, a basic block, a projection
    # shortcut with its BN, the head): every kind of BN use, at a fraction of resnet20's compile.
    # XLA's own conv weight gradients: these tests are about the data-parallel maths, and the
    # CPU's im2col-block gradient (tests/test_conv.py) doubles the compile time.
    model = models.ResNet(stage_sizes=(1, 1), stage_widths=(8, 16), block_cls=models.BasicBlock,
                          stem="cifar", shortcut="B", num_classes=10, in_channels=1,
                          kernels="xla", dtype=jnp.float64,
                          param_dtype=jnp.float64, **model_options)
    state = jax.jit(functools.partial(steps.create_train_state, model, tx, IMAGE))(
        jax.random.PRNGKey(0))
    # Non-trivial running statistics and BN scales, so that every term of the update shows.
    rng = np.random.default_rng(1)
    return state.replace(
        params=jax.tree_util.tree_map(
            lambda p: p * (1 + 0.1 * rng.standard_normal(p.shape)), state.params),
        batch_stats=jax.tree_util.tree_map(
            lambda s: s + 0.1 * rng.uniform(size=s.shape), state.batch_stats))


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.normal(size=(BATCH, *IMAGE)).astype(np.float32),
            "label": rng.integers(0, 10, BATCH).astype(np.int32)}


def run_steps(state, devices, batches, accumulation_steps=1):
    mesh = sharding.create_mesh(devices)
    state = jax.device_put(jax.device_get(state), sharding.replicated(mesh))  # a copy: donated
    step, _ = steps.compile_train_step(state, mesh, (BATCH, *IMAGE),
                                       StepSpec(accumulation_steps=accumulation_steps))
    all_sums = []
    for batch in batches:
        state, sums = step(state, sharding.to_global(batch, mesh))
        all_sums.append(jax.device_get(sums))
    return jax.device_get(state), all_sums


def assert_trees_close(ours, reference, tolerance=1e-10):
    closeness.assert_trees_close(ours, reference, tolerance)


@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_global_batch_norm_on_two_devices_equals_one_device_holding_the_batch():
    with jax.enable_x64(True):
        state = make_state(optax.sgd(0.1, momentum=0.9))
        batches = [make_batch(0), make_batch(1)]
        sharded, sharded_sums = run_steps(state, simulated_devices(), batches)
        single, single_sums = run_steps(state, jax.devices()[:1], batches)
    assert_trees_close((sharded.params, sharded.batch_stats),
                       (single.params, single.batch_stats))
    assert_trees_close(sharded_sums, single_sums, 1e-6)  # metric sums are float32


@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_batch_norm_groups_of_the_per_device_batch_equal_pmap_without_cross_device_mean():
    """bn_group_size = per-device batch on a sharded jit is what PyTorch DDP computes: pmap with
    per-device statistics and only the gradients averaged across devices. Running statistics:
    the mean over devices of each device's update."""
    devices = simulated_devices()
    local = BATCH // len(devices)
    with jax.enable_x64(True):
        tx = optax.sgd(1.0)  # new params = params - grads: the gradients are compared exactly
        grouped = make_state(tx, bn_group_size=local)
        ours, _ = run_steps(grouped, devices, [make_batch()])

        plain = make_state(tx)  # global statistics, but pmap applies it to one device's batch

        def per_device(state, images, labels):
            def loss_fn(params):
                logits, new = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                                             images, train=True, mutable=["batch_stats"])
                return cross_entropy(logits, labels, 10), new["batch_stats"]
            grads, batch_stats = jax.grad(loss_fn, has_aux=True)(state.params)
            return jax.lax.pmean(grads, "devices"), batch_stats  # no pmean of the statistics

        batch = make_batch()
        grads, device_stats = jax.pmap(per_device, "devices", in_axes=(None, 0, 0),
                                       devices=devices)(
            plain, batch["image"].reshape(len(devices), local, *IMAGE),
            batch["label"].reshape(len(devices), local))
        reference_params = jax.tree_util.tree_map(lambda p, g: p - g[0], plain.params, grads)
        reference_stats = jax.tree_util.tree_map(lambda s: s.mean(0), device_stats)

    assert_trees_close((ours.params, ours.batch_stats), (reference_params, reference_stats))
    # The comparison has teeth: every BN layer's statistics differ between devices (so global
    # statistics, their mean, would normalise differently).
    spread = jax.tree_util.tree_map(lambda s: float(np.abs(s[0] - s[1]).max()), device_stats)
    assert min(jax.tree_util.tree_leaves(spread)) > 1e-3


@pytest.mark.parametrize("num_devices", [1, 2])
@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_gradient_accumulation_with_groups_of_the_micro_batch_equals_the_large_batch(
        num_devices):
    """Two micro-batches with BN groups of a per-device micro-batch give the large batch's
    step (with the same groups), step after step, and the schedule counts optimizer steps."""
    devices = jax.devices()[:num_devices]
    accumulation = 2
    group = BATCH // (num_devices * accumulation)
    schedule = optax.linear_schedule(0.02, 0.2, transition_steps=3)  # differs every step
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(schedule, momentum=0.9))
    batches = [make_batch(seed) for seed in range(3)]
    with jax.enable_x64(True):
        state = make_state(tx, bn_group_size=group)
        large, large_sums = run_steps(state, devices, batches)
        accumulated, accumulated_sums = run_steps(state, devices, batches, accumulation)
    assert int(accumulated.step) == 3
    assert_trees_close((accumulated.params, accumulated.batch_stats),
                       (large.params, large.batch_stats))
    assert_trees_close(accumulated_sums, large_sums, 1e-6)


def test_micro_batches_take_a_chunk_of_every_shard():
    batch = {"x": jnp.arange(16)}
    micro = steps.split_micro_batches(batch, accumulation_steps=2, num_shards=4)["x"]
    np.testing.assert_array_equal(micro, [[0, 1, 4, 5, 8, 9, 12, 13],
                                          [2, 3, 6, 7, 10, 11, 14, 15]])
