"""init_from (torchvision state dicts, safetensors, workdirs) and freeze_backbone."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from resnet_jax import models
from resnet_jax import plan as plans
from resnet_jax.configs import default
from resnet_jax.errors import UserError
from resnet_jax.interop import torchvision_weights
from resnet_jax.runs import warm_start
from resnet_jax.train import optim, steps, trainable

torch = pytest.importorskip("torch", reason="torchvision state dicts")
torchvision = pytest.importorskip("torchvision")


@functools.cache
def _resnet18_variables(num_classes):
    model = models.create_model("resnet18", num_classes=num_classes)
    return jax.device_get(jax.jit(functools.partial(model.init, train=False))(
        jax.random.PRNGKey(1), jnp.zeros((1, 32, 32, 3))))


def _imagenet_state_dict():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=1000).state_dict()


def test_an_imagenet_state_dict_fills_all_but_a_head_of_another_class_count(tmp_path):
    state_dict = _imagenet_state_dict()
    path = str(tmp_path / "resnet18.pth")
    torch.save(state_dict, path)
    fresh = _resnet18_variables(9)
    merged, summary = warm_start.merge(fresh, warm_start.read(path, fresh), path)
    assert summary.splitlines()[0] == f"init_from {path}: loaded 100 of 102 tensors"
    assert ("re-initialised (another shape there): fc.bias (1000,) there, (9,) here, "
            "fc.weight (1000, 512) there, (9, 512) here") in summary
    ours = {**torchvision_weights.torch_arrays(merged["params"], "params"),
            **torchvision_weights.torch_arrays(merged["batch_stats"], "batch_stats")}
    assert ours["fc.weight"].shape == (9, 512)
    for key, value in state_dict.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        np.testing.assert_array_equal(ours[key], value.numpy(), err_msg=key)  # bit for bit
    np.testing.assert_array_equal(merged["params"]["fc"]["kernel"],
                                  fresh["params"]["fc"]["kernel"])  # the fresh head


def test_safetensors_and_wrapped_checkpoints_load_the_same(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    state_dict = _imagenet_state_dict()
    fresh = _resnet18_variables(1000)
    safetensors_torch.save_file(state_dict, str(tmp_path / "w.safetensors"))
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state_dict.items()}},
               str(tmp_path / "w.pt"))
    loaded = [warm_start.merge(fresh, warm_start.read(str(tmp_path / name), fresh),
                               name, "resnet18", complete=True)[0]
              for name in ("w.safetensors", "w.pt")]
    for a, b in zip(jax.tree_util.tree_leaves(loaded[0]), jax.tree_util.tree_leaves(loaded[1])):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        torchvision_weights.torch_arrays(loaded[0]["params"], "params")["conv1.weight"],
        state_dict["conv1.weight"].numpy())


class _Payload:
    """A pickled object that would run a command when loaded (it must not be)."""

    def __reduce__(self):
        return (os.system, ("echo loaded > /dev/null",))


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "init_from={path} does not exist"),
    (lambda p: open(p, "wb").write(b"not a pickle"), "cannot read {path} as a PyTorch state "
                                                     "dict"),
    (lambda p: torch.save({"conv1.weight": _Payload()}, p),
     "cannot read {path} as a PyTorch state dict: it holds Python objects besides tensors, "
     "and unpickling them would run their code, so they are not loaded"),
    (lambda p: torch.save(torchvision.models.resnet50(num_classes=9).state_dict(), p),
     "init_from={path} does not fit resnet18: layer1.0.conv1.weight (64, 64, 1, 1) there, "
     "(64, 64, 3, 3) here"),
    # a deeper network of the same family: every resnet18 tensor is there, with its shape
    (lambda p: torch.save(torchvision.models.resnet34(num_classes=9).state_dict(), p),
     "init_from={path} does not fit resnet18: 80 tensors there that resnet18 does not have "
     "(layer1.2.conv1.weight, layer1.2.bn1.weight, layer1.2.bn1.bias, ... (80 in all))"),
])
def test_weights_that_cannot_be_used_are_refused(tmp_path, make, message):
    path = str(tmp_path / "weights.pth")
    make(path)
    fresh = _resnet18_variables(9)
    with pytest.raises(warm_start.InitError) as error:
        warm_start.merge(fresh, warm_start.read(path, fresh), path, "resnet18")
    assert message.format(path=path) in str(error.value)
    assert "\n" not in str(error.value)
    assert "weights_only=False" not in str(error.value)  # never advise running the pickle


def _train_two_steps(trainable_text, freeze_backbone=False):
    """resnet8 (stem, layer1..3, head) trained 2 steps with `trainable`; (before, after)."""
    config = default.get_config()
    config.update(model="resnet8", trainable=trainable_text, freeze_backbone=freeze_backbone,
                  learning_rate=0.5, weight_decay=1e-2, momentum=0.9)
    parts = plans.parse_trainable(config.trainable, "resnet8", freeze_backbone)
    model = models.create_model("resnet8", num_classes=4, in_channels=3,
                                eval_mode_norms=plans.eval_mode_norms(parts, "resnet8"))
    tx = optim.create_optimizer(plans.build(config).optimizer, optax.constant_schedule(0.5))
    state = steps.create_train_state(model, tx, (8, 8, 3), jax.random.PRNGKey(0))
    trains = None if parts is None else trainable.mask(state.params, parts)
    batch = {"image": jax.random.normal(jax.random.PRNGKey(1), (6, 8, 8, 3)),
             "label": jnp.arange(6) % 4}
    step = jax.jit(functools.partial(steps.train_step, trains=trains))
    new = state
    for _ in range(2):
        new, _ = step(new, batch)
    return state, new


def _changed(before, after) -> dict:
    """{path: changed?} over params and batch statistics."""
    old = traverse_util.flatten_dict({"params": before.params, "stats": before.batch_stats})
    new = traverse_util.flatten_dict({"params": after.params, "stats": after.batch_stats})
    return {key: not np.array_equal(value, old[key]) for key, value in new.items()}


@pytest.mark.parametrize("text, freeze_backbone", [("head", False), ("all", True)])
def test_a_frozen_backbone_keeps_its_weights_and_statistics_bitwise(text, freeze_backbone):
    before, after = _train_two_steps(text, freeze_backbone)
    for key, changed in _changed(before, after).items():
        assert changed == (key[:2] in (("params", "fc"),)), key


def test_norm_and_head_change_norms_and_head_only_and_update_the_statistics():
    before, after = _train_two_steps("norm+head")
    for key, changed in _changed(before, after).items():
        norm_or_head = key[1] == "fc" or key[0] == "stats" or key[-2].startswith("bn")
        assert changed == norm_or_head, key


def test_a_trainable_stage_changes_and_the_frozen_ones_stay_bitwise_statistics_too():
    before, after = _train_two_steps("layer3+head")
    for key, changed in _changed(before, after).items():
        assert changed == (key[1] == "fc" or key[1].startswith("layer3_")), key


def test_frozen_parameters_have_no_optimiser_state():
    before, _ = _train_two_steps("layer3+head")
    trains = trainable.mask(before.params, frozenset({"layer3", "head"}))
    trained = sum(int(np.prod(p.shape)) for p, t in zip(
        jax.tree_util.tree_leaves(before.params), jax.tree_util.tree_leaves(trains)) if t)
    state_sizes = [int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(before.opt_state)
                   if hasattr(x, "shape") and x.ndim > 0]
    assert sum(state_sizes) == trained  # one momentum buffer per trainable parameter only
    assert "trainable: layer3+head, " in trainable.describe(before.params, trains, "layer3+head")


@pytest.mark.parametrize("text, message", [
    ("layer4+head", "trainable='layer4\\+head': layer4 is not a part of resnet8"),
    ("bn+head", "bn is not a part"),
])
def test_parts_the_model_lacks_are_refused(text, message):
    with pytest.raises(UserError, match=message):
        plans.parse_trainable(text, "resnet8")
    with pytest.raises(UserError, match="cannot be combined with trainable='norm'"):
        plans.parse_trainable("norm", "resnet18", freeze_backbone=True)


def test_a_shallower_networks_weights_are_refused(tmp_path):
    path = str(tmp_path / "resnet18.pth")
    torch.save(torchvision.models.resnet18(num_classes=9).state_dict(), path)
    fresh = jax.device_get(jax.jit(functools.partial(
        models.create_model("resnet34", num_classes=9).init, train=False))(
        jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    with pytest.raises(warm_start.InitError, match=r"does not fit resnet34: 80 tensors of "
                                                   r"resnet34 not there \(layer1\.2\."):
        warm_start.merge(fresh, warm_start.read(path, fresh), path, "resnet34")


def _mlp_resnet8(dropout=0.0):
    model = models.create_model("resnet8", num_classes=3, in_channels=3, head="mlp",
                                head_hidden=6, head_dropout=dropout)
    variables = jax.jit(functools.partial(model.init, train=False))(
        jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
    return model, variables


def test_an_mlp_head_and_its_dropout():
    model, variables = _mlp_resnet8(dropout=0.5)
    assert variables["params"]["head_hidden"]["kernel"].shape == (64, 6)
    assert variables["params"]["fc"]["kernel"].shape == (6, 3)
    images = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3))
    evaluate = jax.jit(functools.partial(model.apply, train=False))
    np.testing.assert_array_equal(evaluate(variables, images), evaluate(variables, images))

    @jax.jit
    def train_logits(seed):  # dropout draws from the "dropout" rng, in training only
        return model.apply(variables, images, train=True, mutable=["batch_stats"],
                           rngs={"dropout": jax.random.PRNGKey(seed)})[0]

    def train(seed):
        return np.asarray(train_logits(seed))
    assert not np.array_equal(train(0), train(1))  # dropout before the classifier
    np.testing.assert_array_equal(train(0), train(0))
    with pytest.raises(UserError, match="head must be one of linear, mlp"):
        models.check_head("deep", 8, 0.0)
    with pytest.raises(UserError, match=r"head_dropout must be in \[0, 1\)"):
        models.check_head("linear", 8, 1.0)


def test_an_mlp_head_exports_to_onnx_and_is_refused_for_torchvision(tmp_path):
    pytest.importorskip("onnxruntime")
    from resnet_jax.interop import export

    model, variables = _mlp_resnet8()
    variables = jax.device_get(variables)
    export.write_onnx("resnet8", model, variables, (8, 8, 3), str(tmp_path / "m.onnx"))
    assert (tmp_path / "m.onnx").exists()  # write_onnx checks onnxruntime's logits itself
    with pytest.raises(UserError, match="head is an MLP .* --format jax or --format onnx"):
        export.write_torchvision("resnet8", variables, (8, 8, 3), str(tmp_path / "m.pth"))
    assert not (tmp_path / "m.pth").exists()


def test_torchvision_weights_fill_a_backbone_under_an_mlp_head(tmp_path):
    path = str(tmp_path / "resnet18.pth")
    torch.save(_imagenet_state_dict(), path)
    model = models.create_model("resnet18", num_classes=5, head="mlp", head_hidden=32)
    fresh = jax.device_get(jax.jit(functools.partial(model.init, train=False))(
        jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    merged, summary = warm_start.merge(fresh, warm_start.read(path, fresh), path, "resnet18")
    expected = torchvision_weights.from_torchvision("resnet18", _imagenet_state_dict())
    np.testing.assert_array_equal(merged["params"]["layer4_1"]["conv2"]["kernel"],
                                  expected["params"]["layer4_1"]["conv2"]["kernel"])
    for module in ("head_hidden", "fc"):  # fresh: torchvision has neither in these shapes
        np.testing.assert_array_equal(merged["params"][module]["kernel"],
                                      fresh["params"][module]["kernel"])


@pytest.mark.parametrize("overrides, said", [
    ({"freeze_backbone": True}, "freeze_backbone=True keeps stem+layer1+layer2+layer3 as it"),
    ({"trainable": "head"}, "trainable='head' keeps stem+layer1+layer2+layer3 as it starts"),
    ({"trainable": "stem"}, "trainable='stem' keeps layer1+layer2+layer3+head as it starts"),
    ({"trainable": "norm+head"}, "keeps the convolutions of stem+layer1+layer2+layer3 as"),
])
def test_a_frozen_part_without_init_from_is_one_rule_and_one_message(overrides, said):
    config = default.get_config()
    config.update(model="resnet8", dataset="fake", **overrides)
    with pytest.raises(UserError, match="without init_from that is a random initialisation") \
            as refused:
        plans.validate_config(config)
    assert said in str(refused.value)
    config.update(trainable="all", freeze_backbone=False)
    plans.validate_config(config)  # every part trains: nothing is kept as it starts
