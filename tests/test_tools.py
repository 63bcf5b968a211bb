"""The measurement scripts in tools/ run, at tiny sizes, and print what they promise."""

import subprocess
import sys

import pytest

from tests.train_cli import REPO, cli_env


def run_tool(*args):
    run = subprocess.run([sys.executable, *args], cwd=REPO, env={**cli_env(1), "PYTHONPATH": REPO},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_grad_precision_reports_every_mode():
    pytest.importorskip("torch")
    out = run_tool("tools/grad_precision.py", "--model", "resnet8", "--image_size", "8",
                   "--batch_size", "4")
    for line in ("torch float32 eager", "jax float64 vs torch float64", "jax float32 jit",
                 "jax float32 op by op"):
        assert line in out
    jax64 = next(line for line in out.splitlines() if line.startswith("jax float64 vs torch"))
    assert float(jax64.split("worst ")[1].split()[0]) < 1e-9  # the same function in float64


def test_profile_step_lists_kernels_per_step():
    out = run_tool("tools/profile_step.py", "--model", "resnet8", "--batch_size", "2",
                   "--image_size", "8", "--steps", "1", "--top", "3")
    assert "s per traced step" in out


def test_autoaugment_op_costs_lists_every_op():
    out = run_tool("tools/autoaugment_op_costs.py", "--size", "16", "--images", "10")
    for op in ("Identity", "ShearX", "Rotate", "Equalize", "(pipeline)"):
        assert any(line.startswith(op) and line.endswith(" ms") for line in out.splitlines())


def test_search_storage_measures_each_storage():
    out = run_tool("tools/search_storage.py", "--workers", "2", "--trials", "4", "--repeats", "1")
    for storage in ("journal", "sqlite"):
        line = next(line for line in out.splitlines() if line.startswith(f"{storage}: "))
        assert "started [4]; failed workers [0]" in line, line


def test_multilabel_reference_trains_torchvision_and_prints_map(tmp_path):
    pytest.importorskip("torchvision")
    from resnet_jax.data import synthetic

    data = synthetic.write_multilabel_folder(str(tmp_path / "shapes"), train=8, val=6, size=24)
    out = run_tool("tools/multilabel_reference.py", data, "--image_size", "16", "--steps", "2",
                   "--batch_size", "4", "--eval_every", "1")
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 1", "step 2"]
    assert all(0 < float(line.split("eval mAP ")[1].split(",")[0]) <= 1 for line in lines)


def test_inference_graph_times_every_variant():
    from tests import extension_available

    extension_available.require()
    pytest.importorskip("onnxruntime")
    out = run_tool("tools/inference_graph.py", "--model", "resnet8", "--image_size", "16",
                   "--repeats", "1")
    for name in ("unfused", "fused, NHWC", "fused, blocked", "onnxruntime"):
        assert f"{name} " in out and "x onnxruntime" in out


@pytest.mark.slow  # builds a C++ program
def test_conv_kernels_times_each_layout_and_kernel():
    from tests import extension_available

    extension_available.require()
    out = run_tool("tools/conv_kernels.py", "--batch_size", "1", "--repeats", "1",
                   "--geometries", "3")
    rows = [line for line in out.splitlines() if " at " in line]
    assert [row.split(":")[0] for row in rows] == [
        "7x7 3->64 stride 2 at 224 px (x1)", "1x1 64->64 stride 1 at 56 px (x1)",
        "3x3 64->64 stride 1 at 56 px (x3)"]
    for row in rows:  # both layouts have a kernel for each geometry, timed
        assert " nChw8c " in row and " nhwc " in row
        assert float(row.split()[-1]) > 0
    for layout in ("nChw8c", "nhwc"):
        for choice in ("oneDNN's first choice", "fastest kernel"):
            assert f"total {layout}, {choice}: " in out
    # --onednn: another install's prefix (here the wheel's own, given explicitly)
    out = run_tool("tools/conv_kernels.py", "--repeats", "1", "--geometries", "1",
                   "--onednn", sys.prefix)
    assert out.startswith("7x7 3->64 stride 2 at 224 px (x1): ")


def test_conv_kernels_names_a_prefix_without_onednn(tmp_path):
    run = subprocess.run([sys.executable, "tools/conv_kernels.py", "--onednn", str(tmp_path)],
                         cwd=REPO, env={**cli_env(1), "PYTHONPATH": REPO}, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip() == (f"error: --onednn {tmp_path}: no oneDNN 3 there "
                                  f"(include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so.3)")
