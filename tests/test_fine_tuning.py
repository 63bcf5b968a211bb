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
from resnet_jax.configs import default
from resnet_jax.interop import torchvision_weights
from resnet_jax.train import optim, steps, warm_start

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


def test_a_frozen_backbone_keeps_its_weights_and_statistics_bitwise():
    model = models.create_model("resnet8", num_classes=4, in_channels=3)
    config = default.get_config()
    config.update(freeze_backbone=True, learning_rate=0.5, weight_decay=1e-2,
                  init_from="(set)")
    tx = optim.create_optimizer(config, optax.constant_schedule(0.5))
    state = steps.create_train_state(model, tx, (8, 8, 3), jax.random.PRNGKey(0))
    batch = {"image": jax.random.normal(jax.random.PRNGKey(1), (6, 8, 8, 3)),
             "label": jnp.arange(6) % 4}
    step = jax.jit(functools.partial(steps.train_step, frozen_backbone=True))
    new = state
    for _ in range(2):
        new, _ = step(new, batch)
    old_params = traverse_util.flatten_dict(state.params)
    for key, value in traverse_util.flatten_dict(new.params).items():
        if key[0] == steps.HEAD:
            assert not np.array_equal(value, old_params[key]), key
        else:
            np.testing.assert_array_equal(value, old_params[key], err_msg=str(key))
    for a, b in zip(jax.tree_util.tree_leaves(new.batch_stats),
                    jax.tree_util.tree_leaves(state.batch_stats)):
        np.testing.assert_array_equal(a, b)


def test_a_shallower_networks_weights_are_refused(tmp_path):
    path = str(tmp_path / "resnet18.pth")
    torch.save(torchvision.models.resnet18(num_classes=9).state_dict(), path)
    fresh = jax.device_get(jax.jit(functools.partial(
        models.create_model("resnet34", num_classes=9).init, train=False))(
        jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    with pytest.raises(warm_start.InitError, match=r"does not fit resnet34: 80 tensors of "
                                                   r"resnet34 not there \(layer1\.2\."):
        warm_start.merge(fresh, warm_start.read(path, fresh), path, "resnet34")
