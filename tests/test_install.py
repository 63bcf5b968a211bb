"""The install contract: extras by job, a core that imports nothing heavy, every platform the
users have resolves (uv's resolver with --python-platform), and the CLIs of a core-only install
name the extra they need."""

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.platform_resolutions import ONEDNN, RESOLUTIONS, start_resolutions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("tensorflow", "tensorflow_datasets", "torch", "torchvision", "matplotlib", "sklearn",
         "onnx", "onnxruntime", "tqdm")
HEAVY_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-datasets", "torch",
                       "torchvision", "matplotlib", "scikit-learn")
TRAIN_LINE = "error: training needs the train extra: pip install 'flax-resnets[train]'"

# A model in the core install: create, init, apply (train and eval), jax.export round trip.
MODEL_SCRIPT = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from resnet_jax.models import create_model
    from resnet_jax.interop.export import export_with_weights

    model = create_model("resnet18", num_classes=10)
    x = jnp.ones((2, 32, 32, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    logits, state = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (2, 10) and "batch_stats" in state
    exported = export_with_weights(model, variables, ("b", 32, 32, 3))
    again = jax.export.deserialize(exported.serialize()).call(np.ones((3, 32, 32, 3), np.float32))
    assert again.shape == (3, 10)
    expected = model.apply(variables, x, train=False)
    np.testing.assert_allclose(again[:2], expected, rtol=1e-5, atol=1e-5)
    print("imported:", sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:])))
""")

# Makes the heavy packages unimportable, as in an install without the extras.
HIDE_HEAVY = textwrap.dedent("""
    import importlib.abc, sys
    class _Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, _Absent())
""")


def _run(args, **kwargs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("XLA_FLAGS", None)
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=env, **kwargs)


def _hidden_script(body: str) -> str:
    return f"HIDDEN = {HEAVY!r}\n{HIDE_HEAVY}\n{body}"


def test_a_model_imports_nothing_heavy():
    result = _run([sys.executable, "-c", _hidden_script(MODEL_SCRIPT), *HEAVY], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "imported: []" in result.stdout


def test_commands_without_the_train_extra_name_it(tmp_path):
    workdir = tmp_path / "run"
    body = ("sys.argv = ['resnet-jax-train', '--config', 'digits', '--workdir', "
            f"{str(workdir)!r}]\nfrom resnet_jax.cli.train import run\nrun()")
    result = _run([sys.executable, "-c", _hidden_script(body)], cwd=ROOT)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(TRAIN_LINE), result.stderr
    assert not workdir.exists()  # nothing was started


@pytest.mark.slow
def test_a_fresh_core_install(tmp_path):
    """`pip install .` in a fresh venv (uv's, for speed): the model works and imports nothing
    heavy; the train command exits 2 with the line naming the extra."""
    uv = shutil.which("uv") or os.path.join(os.path.dirname(sys.executable), "uv")
    venv = tmp_path / "venv"
    made = _run([uv, "venv", "-q", "-p", sys.executable, str(venv)])
    assert made.returncode == 0, made.stderr
    python = str(venv / "bin" / "python")
    installed = _run([uv, "pip", "install", "-q", "--python", python, ROOT])
    _skip_if_offline(installed)
    assert installed.returncode == 0, installed.stderr[-3000:]
    listed = _run([uv, "pip", "list", "--python", python]).stdout.lower()
    for name in HEAVY_DISTRIBUTIONS:
        assert not re.search(rf"^{name}\s", listed, re.M), f"{name} in the core install"
    model = _run([python, "-c", MODEL_SCRIPT, *HEAVY], cwd=tmp_path)  # the installed copy
    assert model.returncode == 0, model.stderr[-3000:]
    assert "imported: []" in model.stdout
    train = _run([str(venv / "bin" / "resnet-jax-train"), "--config", "digits", "--workdir",
                  str(tmp_path / "W")], cwd=tmp_path)
    assert train.returncode == 2 and train.stderr.startswith(TRAIN_LINE), train.stderr
    info = _run([python, "-m", "resnet_jax.info"], cwd=tmp_path,)
    assert info.returncode == 0, info.stderr[-2000:]
    assert "extras importable: none (core only)" in info.stdout
    assert re.search(r"^devices: 1 x cpu .*, jax \d", info.stdout, re.M), info.stdout


@pytest.fixture(scope="module")
def resolutions():
    return {key: future.result() for key, future in start_resolutions().items()}


def _skip_if_offline(result):
    if result.returncode != 0 and re.search(r"(?i)(dns error|failed to fetch|connect|"
                                            r"network|timed out)", result.stderr):
        pytest.skip(f"the package registry cannot be reached: {result.stderr.strip()[-300:]}")


def _pinned(output: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", output, re.M))


@pytest.mark.slow  # ~75 s for all, waiting on the registry (started at collection)
@pytest.mark.parametrize("key", sorted(RESOLUTIONS))
def test_every_platform_resolves(resolutions, key):
    extra, target, expected = RESOLUTIONS[key]
    result = resolutions[key]
    _skip_if_offline(result)
    assert result.returncode == 0, f"{key} does not resolve:\n{result.stderr[-3000:]}"
    pinned = {name.lower().replace("_", "-") for name in _pinned(result.stdout)}
    missing = [name for name in expected if name not in pinned]
    assert not missing, f"{key} lacks {missing}"
    if extra is None:
        assert not pinned & set(HEAVY_DISTRIBUTIONS), pinned & set(HEAVY_DISTRIBUTIONS)
    if "linux-x86_64" not in key:
        assert ONEDNN not in pinned
