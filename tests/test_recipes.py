"""Modern recipe components against their references: MLPerf's LARS and schedule (NumPy
transcriptions of the reference's formulas), torch's gradient clipping and parameter-group
weight decay (the real torch), torchvision's EMA, MixUp/CutMix and RandomErasing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from resnet_jax.configs import default
from resnet_jax.train import optim


def _params(rng):
    return {"conv1": {"kernel": rng.normal(size=(3, 3, 2, 4))},
            "bn1": {"scale": 1 + 0.1 * rng.normal(size=4), "bias": 0.1 * rng.normal(size=4)},
            "fc": {"kernel": rng.normal(size=(4, 5)), "bias": 0.1 * rng.normal(size=5)}}


def _f32(tree):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), tree)


# --- MLPerf LARS ----------------------------------------------------------------------------

def _reference_lars(params, grads_per_step, lrs, momentum, wd, eeta, eps, nesterov):
    """mlcommons/training image_classification/tensorflow2/lars_optimizer.py,
    `_resource_apply_dense` + `compute_lr`, in float64 NumPy; skip_list =
    ['batch_normalization', 'bias']: every 1-D parameter here."""
    params = {k: {n: np.array(v, np.float64) for n, v in d.items()} for k, d in params.items()}
    mom = {k: {n: np.zeros_like(v) for n, v in d.items()} for k, d in params.items()}
    for grads, lr in zip(grads_per_step, lrs):
        for k in params:
            for n, var in params[k].items():
                grad = np.array(grads[k][n], np.float64)
                scaled_lr = lr
                if var.ndim > 1:  # not in the skip list
                    w_norm, g_norm = np.linalg.norm(var), np.linalg.norm(grad)
                    trust = (eeta * w_norm / (g_norm + wd * w_norm + eps)
                             if w_norm > 0 and g_norm > 0 else 1.0)
                    scaled_lr = lr * trust
                    grad = grad + wd * var
                mom_t = mom[k][n] * momentum - grad * scaled_lr
                mom[k][n] = mom_t
                params[k][n] = (var + mom_t * momentum - grad * scaled_lr if nesterov
                                else var + mom_t)
    return params


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_five_steps_equal_mlperf_reference(nesterov):
    rng = np.random.default_rng(0)
    params = _params(rng)
    grads = [jax.tree_util.tree_map(lambda p: rng.normal(size=p.shape), params)
             for _ in range(5)]
    lrs = [0.0, 2.5, 5.0, 7.5, 10.0]
    tx = optim.mlperf_lars(lambda count: jnp.asarray(lrs)[count], momentum=0.9,
                           weight_decay=5e-5, eeta=0.001, nesterov=nesterov)
    ours = _f32(params)
    state = tx.init(ours)
    for g in grads:
        updates, state = tx.update(_f32(g), state, ours)
        ours = jax.tree_util.tree_map(lambda p, u: p + u, ours, updates)
    expected = _reference_lars(params, grads, lrs, 0.9, 5e-5, 0.001, 1e-7, nesterov)
    for (path, value), want in zip(jax.tree_util.tree_leaves_with_path(ours),
                                   jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(np.asarray(value, np.float64), want, rtol=1e-6, atol=1e-7,
                                   err_msg=jax.tree_util.keystr(path))


def test_polynomial_schedule_equals_mlperf_polynomial_decay_with_warmup():
    peak, end, warmup, total = 10.0, 1e-4, 5 * 392.5, 37 * 392
    decay_steps = total - warmup + 1

    def reference(step):  # lars_util.py PolynomialDecayWithWarmup + Keras PolynomialDecay
        if step <= warmup:
            return peak * step / warmup
        p = min(step - warmup, decay_steps) / decay_steps
        return (peak - end) * (1 - p) ** 2.0 + end

    schedule = optim.polynomial_warmup_schedule(peak, end, warmup, total)
    for step in [0, 1, 1000, 1962, 1963, 5000, total - 1, total]:
        assert float(schedule(step)) == pytest.approx(reference(step), rel=1e-6, abs=1e-9)


# --- torch's clipping and parameter groups --------------------------------------------------

def test_clip_grad_norm_equals_torch():
    rng = np.random.default_rng(1)
    grads = jax.tree_util.tree_map(lambda g: g.astype(np.float32), _params(rng))
    for max_norm in (0.5, 100.0):
        tensors = [torch.tensor(g, requires_grad=True) for g in jax.tree_util.tree_leaves(grads)]
        for t, g in zip(tensors, jax.tree_util.tree_leaves(grads)):
            t.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_norm_(tensors, max_norm)
        clipped, _ = optim.clip_grad_norm(max_norm).update(
            jax.tree_util.tree_map(jnp.asarray, grads), None)
        for ours, theirs in zip(jax.tree_util.tree_leaves(clipped), tensors):
            np.testing.assert_allclose(np.asarray(ours), theirs.grad.numpy(), rtol=1e-6)


def test_norm_and_bias_weight_decay_equal_torch_parameter_groups():
    config = default.get_config()
    config.update(weight_decay=2e-5, norm_weight_decay=0.0, bias_weight_decay=1e-3,
                  learning_rate=0.5, momentum=0.9, grad_clip_norm=1.0)
    rng = np.random.default_rng(2)
    params = jax.tree_util.tree_map(lambda p: p.astype(np.float32), _params(rng))
    grads = [jax.tree_util.tree_map(lambda p: rng.normal(size=p.shape).astype(np.float32),
                                    params) for _ in range(3)]
    tx = optim.create_optimizer(config, optax_constant(0.5))
    ours = jax.tree_util.tree_map(jnp.asarray, params)
    state = tx.init(ours)
    for g in grads:
        updates, state = tx.update(jax.tree_util.tree_map(jnp.asarray, g), state, ours)
        ours = jax.tree_util.tree_map(lambda p, u: p + u, ours, updates)

    names = [("conv1", "kernel", 2e-5), ("fc", "kernel", 2e-5), ("bn1", "scale", 0.0),
             ("bn1", "bias", 0.0), ("fc", "bias", 1e-3)]
    tensors = {(m, n): torch.tensor(params[m][n], requires_grad=True) for m, n, _ in names}
    sgd = torch.optim.SGD([{"params": [tensors[(m, n)]], "weight_decay": wd}
                           for m, n, wd in names], lr=0.5, momentum=0.9)
    for g in grads:
        for (m, n), t in tensors.items():
            t.grad = torch.tensor(g[m][n])
        torch.nn.utils.clip_grad_norm_(list(tensors.values()), 1.0)
        sgd.step()
    for (m, n), t in tensors.items():
        np.testing.assert_allclose(np.asarray(ours[m][n]), t.detach().numpy(), rtol=2e-6,
                                   atol=1e-7, err_msg=f"{m}.{n}")


def optax_constant(value):
    return lambda count: value


# --- EMA ------------------------------------------------------------------------------------

def test_ema_equals_torchvision_reference_over_50_steps():
    from resnet_jax.train import ema

    config = default.get_config()
    config.update(batch_size=64, ema_decay=0.99, ema_steps=4, warmup_epochs=1.0)
    num_train, num_epochs = 600, 10.0  # 10 iterations an epoch (the last one partial)
    ema_config = ema.EmaConfig.from_config(config, num_train, num_epochs)

    # torchvision references/classification/utils.py ExponentialMovingAverage, and train.py's
    # decay adjustment and update loop.
    class ExponentialMovingAverage(torch.optim.swa_utils.AveragedModel):
        def __init__(self, model, decay, device="cpu"):
            def ema_avg(avg_model_param, model_param, num_averaged):
                return decay * avg_model_param + (1 - decay) * model_param
            super().__init__(model, device, ema_avg, use_buffers=True)

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    adjust = 1 * config.batch_size * config.ema_steps / num_epochs
    alpha = min(1.0, (1.0 - config.ema_decay) * adjust)
    model_ema = ExponentialMovingAverage(model, device="cpu", decay=1.0 - alpha)
    iterations = -(-num_train // config.batch_size)

    rng = np.random.default_rng(3)
    names = {"0.weight": ("params", "kernel"), "0.bias": ("params", "bias"),
             "1.weight": ("params", "scale"), "1.bias": ("params", "shift"),
             "1.running_mean": ("batch_stats", "mean"), "1.running_var": ("batch_stats", "var")}
    averaged = None
    update = jax.jit(ema.update, static_argnums=4)
    for step in range(50):
        epoch, i = divmod(step, iterations)
        new = {"params": {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=4),
                          "scale": rng.normal(size=4), "shift": rng.normal(size=4)},
               "batch_stats": {"mean": rng.normal(size=4), "var": rng.uniform(0.5, 2, 4)}}
        new = jax.tree_util.tree_map(lambda x: x.astype(np.float32), new)
        with torch.no_grad():
            state = model.state_dict()
            for name, (group, key) in names.items():
                state[name].copy_(torch.tensor(new[group][key]))
        if i % config.ema_steps == 0:  # train.py, after optimizer.step()
            model_ema.update_parameters(model)
            if epoch < config.warmup_epochs:
                model_ema.n_averaged.fill_(0)
        if averaged is None:
            averaged = ema.initial(new["params"], new["batch_stats"])
        averaged = update(averaged, new["params"], new["batch_stats"], step, ema_config)

    theirs = model_ema.module.state_dict()
    for name, (group, key) in names.items():
        np.testing.assert_allclose(np.asarray(averaged[group][key]), theirs[name].numpy(),
                                   rtol=1e-6, atol=1e-7, err_msg=name)
    assert int(averaged["count"]) == int(model_ema.n_averaged)


# --- mixup, cutmix, random erasing against torchvision.transforms.v2 -------------------------

from unittest import mock  # noqa: E402

from scipy import stats  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from resnet_jax.train import batch_augment  # noqa: E402


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


# --- the recipes end to end -----------------------------------------------------------------

from resnet_jax.configs import digits  # noqa: E402
from resnet_jax.train import checkpoint, loop  # noqa: E402
from tests.digits_runs import small_digits_config  # noqa: E402
from tests.train_cli import read_metrics  # noqa: E402


@pytest.mark.slow
def test_digits_with_mixup_cutmix_and_ema_reaches_98_percent(tmp_path, cache_dir):
    config = digits.get_config()
    config.update(mixup_alpha=0.2, cutmix_alpha=1.0, ema_decay=0.99, ema_steps=1,
                  progress_bar=False, compilation_cache_dir=cache_dir)
    result = loop.train_and_evaluate(config, str(tmp_path))
    final_ema = [row for row in read_metrics(str(tmp_path), drop=())
                 if row["split"] == "eval_ema"][-1]
    assert result["top1"] >= 0.98 and final_ema["top1"] >= 0.98
    assert final_ema["count"] == 360


def test_a_recipe_run_on_image_folders_resumes_bitwise(tmp_path, cache_dir):
    """TrivialAugmentWide, random erasing, mixup/cutmix, stochastic depth, repeated
    augmentation, EMA, LARS with its polynomial schedule and gradient clipping on PNG folders:
    stopped and resumed, the state (EMA included) is bitwise the uninterrupted run's."""
    from tools.image_folders import write_digits

    data = write_digits(str(tmp_path / "digits"))
    recipe = dict(dataset="folder", data_dir=data, image_size=8, eval_resize=12,
                  eval_crop_size=12, crop_min_area=0.5, random_flip=False, num_train_steps=8,
                  batch_size=16, eval_batch_size=60, log_every_steps=2, eval_every_steps=0,
                  checkpoint_every_steps=4, random_erasing=0.5, mixup_alpha=0.2,
                  cutmix_alpha=1.0, ema_decay=0.9, ema_steps=2, optimizer="lars",
                  schedule="polynomial", learning_rate=2.0, warmup_epochs=0.05,
                  grad_clip_norm=5.0, weight_decay=5e-5, ra_reps=2, drop_path_rate=0.2,
                  auto_augment="ta_wide")
    whole, resumed = str(tmp_path / "whole"), str(tmp_path / "resumed")
    result = loop.train_and_evaluate(small_digits_config(cache_dir, **recipe), whole)
    assert loop.train_and_evaluate(small_digits_config(cache_dir, stop_after_steps=4,
                                                       **recipe), resumed) == {"step": 4}
    loop.train_and_evaluate(small_digits_config(cache_dir, **recipe), resumed)
    ours, reference = checkpoint.load_state(resumed), checkpoint.load_state(whole)
    assert set(ours["ema"]) == {"params", "batch_stats", "count"}
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(reference)):
        np.testing.assert_array_equal(a, b)
    rows = read_metrics(whole, drop=())
    assert {row["split"] for row in rows} == {"train", "eval", "eval_ema"}
    assert np.isfinite(result["loss"])


# --- stochastic depth -----------------------------------------------------------------------

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
        results.append(jax.jit(lambda s, b, seed=seed: steps.train_step(s, b, dropout_seed=seed))(
            state, batch)[0])
    for a, b in zip(jax.tree_util.tree_leaves(results[0]), jax.tree_util.tree_leaves(results[1])):
        np.testing.assert_array_equal(a, b)
    # ...and at rate 0.5 the step differs (the rng reaches the blocks).
    model = models.create_model("resnet8", num_classes=3, in_channels=3, drop_path_rate=0.5)
    state = steps.create_train_state(model, optim.sgd(0.1), (8, 8, 3), jax.random.PRNGKey(0))
    dropped = jax.jit(lambda s, b: steps.train_step(s, b, dropout_seed=5))(state, batch)[0]
    assert not np.array_equal(dropped.params["fc"]["kernel"], results[0].params["fc"]["kernel"])


@pytest.mark.parametrize("dataset,policy", [("fake", "ta_wide"), ("folder", "rand_augment")])
def test_auto_augment_and_random_erasing_train_on_fake_and_folder_data(tmp_path, cache_dir,
                                                                      dataset, policy):
    from resnet_jax.data import batching, datasets
    from tools.image_folders import write_digits

    data = write_digits(str(tmp_path / "digits")) if dataset == "folder" else ""
    config = small_digits_config(
        cache_dir, dataset=dataset, data_dir=data, image_size=16, eval_resize=16,
        fake_num_examples=64, fake_num_classes=10, num_train_steps=4, batch_size=16,
        eval_batch_size=16, log_every_steps=2, eval_every_steps=0, checkpoint_every_steps=4,
        auto_augment=policy, random_erasing=0.25)
    plain = datasets.create_source(small_digits_config(cache_dir, **{
        **config.to_dict(), "auto_augment": ""}))
    augmented = datasets.create_source(config)
    first = next(batching.train_batches(augmented, 16, 0, 1, seed=0))["image"]
    assert first.dtype == np.uint8 and first.shape == (16, 16, 16, 3)
    assert not np.array_equal(first, next(batching.train_batches(plain, 16, 0, 1, 0))["image"])
    result = loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert np.isfinite(result["loss"]) and result["step"] == 4


@pytest.mark.parametrize("name", ["imagenet_resnet50_tv_v2", "imagenet_resnet50_mlperf"])
def test_recipe_configs_validate(name):
    import importlib

    from resnet_jax.train import config as train_config
    from resnet_jax.train import ema

    config = importlib.import_module(f"resnet_jax.configs.{name}").get_config()
    train_config.validate_config(config)
    # torchvision's train.py: 1 - min(1, (1 - 0.99998) * 1024 * 32 / 600)
    if name.endswith("tv_v2"):
        decay = ema.EmaConfig.from_config(config, 1_281_167, 600.0).decay
        assert decay == pytest.approx(1 - (1 - 0.99998) * 1024 * 32 / 600, rel=1e-12)


def test_epoch_schedule_equals_torchvisions_sequential_lr():
    """torchvision train.py: SequentialLR([LinearLR(start_factor=0.01, total_iters=5),
    CosineAnnealingLR(T_max=epochs - 5)], milestones=[5]), stepped once an epoch."""
    config = default.get_config()
    config.update(learning_rate=0.5, lr_scaling_batch_size=0, schedule="cosine",
                  warmup_epochs=5.0, warmup_start_factor=0.01, schedule_unit="epoch")
    epochs, iterations = 40, 7  # an epoch: ceil(N / batch) = 7 iterations
    schedule = optim.create_schedule(config, 6.5, epochs * iterations)
    parameter = torch.nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([parameter], lr=0.5)
    torch_schedule = torch.optim.lr_scheduler.SequentialLR(sgd, [
        torch.optim.lr_scheduler.LinearLR(sgd, start_factor=0.01, total_iters=5),
        torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=epochs - 5)], milestones=[5])
    for epoch in range(epochs):
        theirs = sgd.param_groups[0]["lr"]
        for i in (0, iterations - 1):
            assert float(schedule(epoch * iterations + i)) == pytest.approx(theirs, rel=1e-5,
                                                                            abs=1e-7)
        sgd.step()
        torch_schedule.step()
