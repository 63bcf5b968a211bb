"""The plan (a config resolved once into frozen specs), the model's named parts, and the tasks."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import models, tasks
from resnet_jax import plan as plans
from resnet_jax.configs import default, digits, folder
from resnet_jax.models import parts


def test_derived_facts_are_computed_once_in_the_plan():
    config = folder.get_config()
    config.update(model="resnet18", image_size=160, eval_crop_size=0, eval_resize=180,
                  batch_size=64, learning_rate=0.1, lr_scaling_batch_size=256,
                  trainable="layer4+head", weight_decay=1e-4, decay_bn_and_bias=False,
                  bias_weight_decay=2e-5, label_smoothing=0.1)
    plan = plans.build(config)
    assert plan.data.eval_crop == 160  # eval_crop_size 0: the training crop
    assert plans.build(_with(config, eval_crop_size=176)).data.eval_crop == 176
    assert plan.schedule.peak == pytest.approx(0.1 * 64 / 256)
    assert plan.optimizer.weight_decays == plans.WeightDecays(1e-4, 0.0, 2e-5)
    assert plan.trainable == frozenset({"layer4", "head"})
    assert plan.optimizer.trainable == plan.trainable
    # the frozen stem and stages run their batch norms in eval mode
    assert plan.model.eval_mode_norms == ("stem", "layer1", "layer2", "layer3")
    assert plan.task == tasks.Classification(0.1) and plan.step.task is plan.task


def _with(config, **overrides):
    changed = config.copy_and_resolve_references()
    changed.update(overrides)
    return changed


def test_the_plan_cannot_change_under_a_running_loop():
    plan = plans.build(digits.get_config())
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.loop = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.data.image_size = 32
    with pytest.raises((AttributeError, TypeError, ValueError)):
        plan.config.learning_rate = 1.0  # the recorded config is a FrozenConfigDict
    assert plan.config.learning_rate == digits.get_config().learning_rate


def test_resolve_checks_the_config_but_a_recorded_one_builds_anywhere():
    """A run recorded on one device count is read back on another (predict, export): its plan
    is built without the checks that depend on this machine."""
    assert jax.device_count() == 2  # conftest.py
    config = _with(digits.get_config(), batch_size=33)
    with pytest.raises(plans.ConfigError, match="batch_size=33 must be a positive multiple"):
        plans.resolve(config)
    assert plans.build(config).loop.batch_size == 33


def test_a_multilabel_dataset_plans_the_multilabel_task():
    config = _with(default.get_config(), dataset="multilabel", threshold=0.3)
    plan = plans.build(config)
    assert plan.task == tasks.MultiLabel(0.3)
    assert plan.task.label_spec(7) == ((7,), "float32")
    assert tasks.Classification().label_spec(7) == ((), "int32")


def test_the_model_built_from_its_spec_is_the_configs():
    config = _with(digits.get_config(), model="resnet20", shortcut="B", head="mlp",
                   head_hidden=16, drop_path_rate=0.1, bn_momentum=0.2)
    model = plans.model_spec(config).create(10, 1)
    assert (model.shortcut, model.head, model.head_hidden, model.drop_path_rate,
            model.bn_momentum, model.in_channels, model.num_classes) == (
        "B", "mlp", 16, 0.1, 0.2, 1, 10)
    assert plans.model_spec(_with(config, model="plain20")).create(10, 1).shortcut is None


def test_the_model_names_its_parts():
    model = models.create_model("resnet8", num_classes=5, head="mlp", head_hidden=6)
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                            jnp.zeros((1, 8, 8, 3)))
    params = shapes["params"]
    by_part = {name: parts.part_of(name) for name in params}
    assert by_part == {"conv1": "stem", "bn1": "stem", "layer1_0": "layer1",
                       "layer2_0": "layer2", "layer3_0": "layer3", "head_hidden": "head",
                       "fc": "head"}
    assert parts.blocks_in_order(params) == ["layer1_0", "layer2_0", "layer3_0"]
    assert models.stage_names("resnet8") == ("layer1", "layer2", "layer3")
    assert models.stage_names("resnet50") == ("layer1", "layer2", "layer3", "layer4")
    assert parts.num_classes(params) == 5 and parts.in_channels(params) == 3
    assert parts.hidden_layer(params)["kernel"].shape == (64, 6)
    pooled = model.clone(num_classes=0)
    variables = jax.tree_util.tree_map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
    features = pooled.apply(parts.without_head(variables), np.zeros((2, 8, 8, 3)), train=False)
    assert features.shape == (2, 64)


@pytest.mark.parametrize("task", [tasks.Classification(), tasks.MultiLabel(0.5)])
def test_a_task_answers_every_question_of_the_interface(task):
    """The interface in tasks/__init__.py, as each task answers it, with shapes the loop and
    the step rely on."""
    logits = jnp.asarray([[2.0, -1.0, 0.5], [-0.5, 0.1, 3.0]])
    shape, dtype = task.label_spec(3)
    labels = (jnp.asarray([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]) if shape
              else jnp.asarray([0, 2], jnp.int32))
    assert labels.shape[1:] == shape and labels.dtype == jnp.dtype(dtype)
    assert task.targets(labels, 3).shape == (2, 3)
    assert np.isfinite(float(task.loss(logits, labels)))
    sums = task.sums(logits, labels, jnp.asarray([True, False]))
    assert set(sums) == {"loss", "top1", "count"} and float(sums["count"]) == 1.0  # 3 classes
    wide = jnp.zeros((2, 6))  # more than 5 classes: top-5 is counted
    wide_labels = jnp.zeros((2, 6)) if shape else jnp.asarray([0, 5], jnp.int32)
    assert set(task.sums(wide, wide_labels)) == {"loss", "top1", "top5", "count"}
    assert float(sums["top1"]) == 1.0  # the first image's best class is (one of) its label(s)
    outputs = np.asarray(task.outputs(logits))
    values = task.summarize({"loss": 0.1, "top1": 1.0, "count": 2}, np.asarray(labels), outputs)
    assert task.summary(values).endswith("loss 0.1000 on 2 held-out examples")
    assert "top-5" not in task.summary(values)
    answers = task.predict(np.asarray(logits), ("a", "b", "c"), top_k=2)
    assert len(answers) == 2 and answers[0][next(iter(answers[0]))][0]["class"] == "a"
    assert task.output_record()["task"] == task.name in tasks.TASKS
