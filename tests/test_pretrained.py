"""Weights by name (`init_from=torchvision:resnet18`, `hf-hub:OWNER/REPO`) from a stand-in Hub
on 127.0.0.1 serving a resnet18 state dict as timm's `timm/resnet18.tv_in1k` does (safetensors):
the backbone arrives bit for bit, the cache serves a second run offline, and a wrong name or an
unreachable Hub is one line and exit status 2."""

import json
import socket

import numpy as np
import pytest

from resnet_jax.interop import pretrained
from resnet_jax.runs import checkpoint
from tests import stand_in_hub
from tests.train_cli import run_cli, run_tool
from tools.image_folders import write_photo_crops

torch = pytest.importorskip("torch", reason="the exported state dict is read with torch")
torchvision = pytest.importorskip("torchvision")

REPO_ID = "timm/resnet18.tv_in1k"


def test_names_resolve_to_timms_copies_of_torchvisions_weights():
    assert pretrained.resolve("torchvision:resnet50").repo == "timm/resnet50.tv2_in1k"
    assert pretrained.resolve("torchvision:resnet50.v1").repo == "timm/resnet50.tv_in1k"
    assert pretrained.resolve("torchvision:resnet18").repo == REPO_ID
    hub = pretrained.resolve("hf-hub:timm/resnet50.a1_in1k@abc")
    assert (hub.repo, hub.revision) == ("timm/resnet50.a1_in1k", "abc")
    for wrong in ("torchvision:resnet19", "torchvision:resnet18.v2", "hf-hub:resnet50"):
        with pytest.raises(pretrained.WeightsNameError) as error:
            pretrained.resolve(wrong)
        assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def hub_files(tmp_path_factory):
    """A torchvision resnet18 (ImageNet's 1000 classes, non-default statistics) saved as the
    Hub's model.safetensors; returns {(repo, file): bytes} and the state dict."""
    from safetensors.torch import save

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    return {(REPO_ID, "model.safetensors"): save(state)}, state


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photo_crops(str(tmp_path_factory.mktemp("photos")), classes=2, train=8, val=4)


def _train(photos, workdir, init_from, env):
    return run_cli(["--config.dataset=folder", f"--config.data_dir={photos}",
                    "--config.model=resnet18", "--config.image_size=32",
                    "--config.eval_resize=36", f"--config.init_from={init_from}",
                    "--config.learning_rate=0", "--config.bn_momentum=0",
                    "--config.num_train_steps=1", "--config.batch_size=4",
                    "--config.eval_batch_size=4"], workdir, config="configs/folder.py",
                   env=env)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_weights_by_name_arrive_bit_for_bit_then_from_the_cache(hub_files, photos, tmp_path):
    files, state = hub_files
    cache = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    with stand_in_hub.serving(files) as (endpoint, requests):
        first = _train(photos, str(tmp_path / "run"), "torchvision:resnet18",
                       {**cache, "HF_ENDPOINT": endpoint})
        assert first.returncode == 0, first.stderr[-3000:]
        assert any(method == "GET" for method, _ in requests)
    assert "init_from torchvision:resnet18 (timm/resnet18.tv_in1k, revision 01234567" \
        in first.stdout
    assert "loaded 100 of 102 tensors" in first.stdout  # the 1000-class fc is replaced
    record = json.load(open(tmp_path / "run" / "weights.json"))
    assert record == {"init_from": "torchvision:resnet18", "repo": REPO_ID,
                      "revision": stand_in_hub.COMMIT, "file": "model.safetensors"}
    output = str(tmp_path / "exported.pth")
    proc = run_tool("export.py", ["--workdir", str(tmp_path / "run"), "--format",
                                  "torchvision", "--output", output])
    assert proc.returncode == 0, proc.stderr[-3000:]
    exported = torch.load(output, weights_only=True)
    backbone = [k for k in state if not k.startswith("fc.")]
    assert len(backbone) == 100
    for key in backbone:
        assert torch.equal(state[key], exported[key]), key
    # the Hub gone, offline: the cache serves the same weights
    offline = _train(photos, str(tmp_path / "again"), "torchvision:resnet18",
                     {**cache, "HF_HUB_OFFLINE": "1",
                      "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"})
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert "loaded 100 of 102 tensors" in offline.stdout


@pytest.mark.parametrize("init_from, offline, message", [
    ("torchvision:resnet19", False, "error: unknown weights 'torchvision:resnet19'; known: "),
    ("torchvision:resnet18", False, "error: init_from=torchvision:resnet18: cannot download "
                                    "timm/resnet18.tv_in1k/model.safetensors from http://"),
    ("hf-hub:someone/resnet18-weights", False, "error: init_from=hf-hub:someone/"),
    ("torchvision:resnet18", True, "error: init_from=torchvision:resnet18: cannot download"),
])
def test_a_wrong_name_or_no_hub_is_one_line(photos, tmp_path, hub_files, init_from, offline,
                                            message):
    files, _ = hub_files
    env = {"HF_HOME": str(tmp_path / "empty_cache")}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    with stand_in_hub.serving(files) as (endpoint, _):
        if init_from == "torchvision:resnet18" and not offline:
            endpoint = f"http://127.0.0.1:{_closed_port()}"  # unreachable
        proc = _train(photos, str(tmp_path / "run"), init_from,
                      {**env, "HF_ENDPOINT": endpoint})
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(message), lines[-3:]
    assert not checkpoint.has_checkpoints(str(tmp_path / "run"))


def test_a_local_safetensors_file_loads_without_torch(hub_files, tmp_path):
    """The numpy reader, as `init_from=FILE.safetensors` uses it: no PyTorch needed."""
    from resnet_jax.runs import warm_start

    files, state = hub_files
    path = tmp_path / "weights.safetensors"
    path.write_bytes(files[(REPO_ID, "model.safetensors")])
    from resnet_jax import models

    model = models.create_model("resnet18", num_classes=1000)
    variables, summary = warm_start.initialised_from(model, (32, 32, 3), str(path), "resnet18")
    assert "loaded 102 of 102 tensors" in summary
    np.testing.assert_array_equal(variables["params"]["conv1"]["kernel"],
                                  state["conv1.weight"].numpy().transpose(2, 3, 1, 0))


def test_the_library_call_gives_the_whole_network(hub_files, tmp_path):
    """pretrained.load, in a program: every tensor, the 1000-class head included, equal to the
    state dict's (huggingface_hub reads HF_ENDPOINT when imported: a fresh process)."""
    import subprocess
    import sys

    from tests.train_cli import REPO, cli_env

    files, state = hub_files
    out = str(tmp_path / "variables.npz")
    code = ("import sys, numpy as np; from resnet_jax.interop import pretrained\n"
            "name, v = pretrained.load('torchvision:resnet18')\n"
            "np.savez(sys.argv[1], name=name, fc=v['params']['fc']['kernel'],\n"
            "         var=v['batch_stats']['layer4_1']['bn2']['var'])\n"
            "try:\n    pretrained.load('hf-hub:someone/mystery-net')\n"
            "except pretrained.WeightsNameError as error:\n    print(error)\n")
    with stand_in_hub.serving(files) as (endpoint, _):
        proc = subprocess.run([sys.executable, "-c", code, out], cwd=REPO, text=True,
                              capture_output=True, env={**cli_env(1), "HF_ENDPOINT": endpoint,
                                                        "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "which architecture? 'mystery-net' is not one of this package's models" in proc.stdout
    with np.load(out) as loaded:
        assert str(loaded["name"]) == "resnet18"
        np.testing.assert_array_equal(loaded["fc"], state["fc.weight"].numpy().T)
        np.testing.assert_array_equal(loaded["var"], state["layer4.1.bn2.running_var"].numpy())
