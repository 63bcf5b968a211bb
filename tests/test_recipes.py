"""The modern recipes end to end: mixup, cutmix and EMA on the digits, a recipe run on image
folders resuming bitwise, auto-augment training, and the shipped recipe configs."""

import jax
import numpy as np
import pytest

from resnet_jax import plan as plans
from resnet_jax.configs import digits
from resnet_jax.plan import data_spec
from resnet_jax.runs import checkpoint
from resnet_jax.train import loop
from tests.digits_runs import small_digits_config
from tests.train_cli import read_metrics


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
    plain = datasets.create_source(data_spec(small_digits_config(cache_dir, **{
        **config.to_dict(), "auto_augment": ""})))
    augmented = datasets.create_source(data_spec(config))
    first = next(batching.train_batches(augmented, 16, 0, 1, seed=0))["image"]
    assert first.dtype == np.uint8 and first.shape == (16, 16, 16, 3)
    assert not np.array_equal(first, next(batching.train_batches(plain, 16, 0, 1, 0))["image"])
    result = loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert np.isfinite(result["loss"]) and result["step"] == 4


@pytest.mark.parametrize("name", ["imagenet_resnet50_tv_v2", "imagenet_resnet50_mlperf"])
def test_recipe_configs_validate(name):
    import importlib

    from resnet_jax.train import ema

    config = importlib.import_module(f"resnet_jax.configs.{name}").get_config()
    plans.validate_config(config)
    # torchvision's train.py: 1 - min(1, (1 - 0.99998) * 1024 * 32 / 600)
    if name.endswith("tv_v2"):
        decay = ema.EmaConfig.adjusted(plans.build(config).ema, config.batch_size, 1_281_167,
                                       600.0).decay
        assert decay == pytest.approx(1 - (1 - 0.99998) * 1024 * 32 / 600, rel=1e-12)
