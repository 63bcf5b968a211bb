"""The journeys that catch version drift, with no PyTorch: what .ci/run's Python 3.13 lane runs
beside its unit tests (jax 0.12 there, 0.10 on 3.11; `make test` leaves them out
on 3.11, where the other tests cover the same paths). A digits run stopped and continued, then
evaluated and exported for jax; a fine-tune from a torchvision-layout safetensors state dict on
a photo folder, then predictions; two search workers sharing one study."""

import csv
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from resnet_jax import errors
from resnet_jax.interop.export import version_tuple
from tests.train_cli import REPO, BackgroundRun, cli_env, run_cli, run_tool
from tools.image_folders import write_photo_crops

pytestmark = pytest.mark.journey

# The Python of another lane (.ci/lanes sets it): a .jax export made here is checked there.
OTHER_PYTHON = "RESNET_JAX_TEST_OTHER_PYTHON"

SMALL = ["--config.model=resnet8", "--config.batch_size=32", "--config.eval_batch_size=360",
         "--config.warmup_epochs=0", "--config.progress_bar=false"]


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """One XLA compilation cache for the module's runs (the search's trials, the tools)."""
    return f"--config.compilation_cache_dir={tmp_path_factory.mktemp('xla_cache')}"


def _jax_version(python: str) -> tuple:
    out = subprocess.run([python, "-c", "import jax; print(jax.__version__)"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.strip()
    return version_tuple(out)


def test_digits_stop_continue_evaluate_and_export_for_jax(tmp_path, cached):
    workdir = str(tmp_path / "digits")
    args = [*SMALL, cached, "--config.num_train_steps=60", "--config.checkpoint_every_steps=10",
            "--config.eval_every_steps=30", "--config.log_every_steps=5"]
    run = BackgroundRun(args, workdir)
    run.wait_for_row(10)
    run.signal(signal.SIGTERM)
    assert run.wait() == errors.Interrupted.exit_status, run.stderr()[-3000:]
    # The same command continues, every DeprecationWarning shown: none from our code (the
    # libraries' own, about each other, are theirs).
    proc = run_cli(args, workdir, env={"PYTHONWARNINGS": "default::DeprecationWarning"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert steps[-1] == 60
    ours = re.findall(r"resnet_jax/\S+\.py:\d+: DeprecationWarning.*", proc.stderr)
    assert not ours, ours

    proc = run_tool("evaluate.py", ["--workdir", workdir, "--json"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads(proc.stdout)
    assert evaluated["step"] == 60 and evaluated["top1"] > 0.5, evaluated  # 10 classes

    exported = str(tmp_path / "digits.jax")
    proc = run_tool("export.py", ["--workdir", workdir, "--format", "jax", "--output", exported])
    assert proc.returncode == 0, proc.stderr[-3000:]
    sidecar = json.load(open(exported + ".json"))["input"]
    assert {"cpu", "cuda", "tpu"} <= set(sidecar["platforms"])
    proc = run_tool("export.py", ["--check", exported])
    assert proc.returncode == 0, proc.stderr[-3000:]

    other = os.environ.get(OTHER_PYTHON)
    if other:  # the same artifact under the other lane's jax: runs, or one line naming both
        proc = subprocess.run([other, "export.py", "--check", exported], cwd=REPO,
                              env=cli_env(1), capture_output=True, text=True, timeout=300)
        if _jax_version(other) >= version_tuple(sidecar["jax_version"]):  # the maker's jax
            assert proc.returncode == 0, proc.stderr[-3000:]
        else:
            assert proc.returncode == 2, proc.stderr[-3000:]
            line = proc.stderr.strip().splitlines()[-1]
            assert f"exported with jax {sidecar['jax_version']}" in line, line
            assert "JAX loads artifacts of its own version or older" in line, line


def _torchvision_safetensors(path: str) -> None:
    """An ImageNet-shaped resnet18 in torchvision's names and layouts, as timm's and
    torchvision's .safetensors files hold it, written without PyTorch."""
    import jax
    import jax.numpy as jnp
    from safetensors.numpy import save_file

    from resnet_jax.interop import torchvision_weights
    from resnet_jax.models import create_model

    model = create_model("resnet18", num_classes=1000)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    tensors = {**torchvision_weights.torch_arrays(variables["params"], "params"),
               **torchvision_weights.torch_arrays(variables["batch_stats"], "batch_stats")}
    save_file({key: np.ascontiguousarray(value) for key, value in tensors.items()}, path)


def test_a_fine_tune_from_a_safetensors_state_dict_predicts(tmp_path, cached):
    weights = str(tmp_path / "resnet18.safetensors")
    _torchvision_safetensors(weights)
    photos = write_photo_crops(str(tmp_path / "photos"), classes=3, train=8, val=4)
    workdir = str(tmp_path / "run")
    proc = run_cli(["--config.dataset=folder", f"--config.data_dir={photos}",
                    "--config.model=resnet18", f"--config.init_from={weights}",
                    "--config.image_size=32", "--config.eval_resize=36",
                    "--config.batch_size=8", "--config.eval_batch_size=12",
                    "--config.num_train_steps=6", "--config.eval_every_steps=6",
                    "--config.warmup_epochs=0", cached], workdir, config="configs/folder.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"init_from {weights}: loaded 100 of 102 tensors" in proc.stdout + proc.stderr

    proc = run_tool("predict.py", ["--workdir", workdir, "--json",
                                   os.path.join(photos, "val", "class_1")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(answers) == 4
    for answer in answers:
        probabilities = [entry["probability"] for entry in answer["top_k"]]
        assert {e["class"] for e in answer["top_k"]} == {"class_0", "class_1", "class_2"}
        assert abs(sum(probabilities) - 1) < 1e-4


def test_two_search_workers_share_one_study(tmp_path, cached):
    workdir = str(tmp_path / "search")
    command = [sys.executable, "-m", "resnet_jax.experiments.search", "--config",
               "configs/digits.py", "--workdir", workdir, "--space",
               "learning_rate=loguniform:0.02:0.4", "--trials", "3", "--pruner", "none",
               *SMALL, cached, "--config.num_train_steps=12", "--config.eval_every_steps=6",
               "--config.checkpoint_every_steps=6", "--config.log_every_steps=6"]
    workers = [subprocess.Popen(command, cwd=REPO, env=cli_env(1), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    rows = list(csv.DictReader(open(os.path.join(workdir, "results.csv"))))
    assert sorted(int(row["trial"]) for row in rows) == [0, 1, 2]
    assert all(row["state"] == "COMPLETE" and int(row["steps"]) == 12 for row in rows), rows
    assert len({row["learning_rate"] for row in rows}) == 3
