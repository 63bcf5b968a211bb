"""The benchmark runs at tiny sizes and its JSON has the documented fields (no speed asserted)."""

import json
import subprocess
import sys

import pytest

from resnet_jax.bench import train_step as benchmark
from tests import extension_available

FIELDS = {"framework", "model", "batch_size", "image_size", "dtype", "images_per_sec",
          "step_ms", "compile_s", "mfu"}


def test_benchmark_module_imports_no_tensorflow():
    code = ("import sys, resnet_jax.bench.train_step; bad = {'tensorflow', 'tensorflow_datasets', "
            "'ml_collections'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_writes_json_with_every_field(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "result.json"
    benchmark.main(["--model", "resnet8", "--batch_size", "4", "--image_size", "8",
                    "--frameworks", "jax,torch", "--modes", "train,inference", "--steps", "1",
                    "--repeats", "2", "--json", str(path)])
    result = json.loads(path.read_text())
    assert result["device"] and result["versions"]["jax"]
    # 2 simulated CPU devices in the test session: "auto" keeps to the pure-JAX CPU kernels
    # (or to XLA's own under RESNET_JAX_KERNELS=xla)
    expected = "xla" if extension_available.XLA_ONLY else "patches"
    assert (result["kernels"], result["kernels_used"]) == ("auto", expected)
    rows = result["results"]
    assert {(r["framework"], r["mode"]) for r in rows} == {
        ("jax", "train"), ("torch", "train"), ("jax", "inference"), ("torch", "inference")}
    for row in rows:
        assert FIELDS <= set(row) and row["error"] is None
        assert row["images_per_sec"] > 0 and row["step_ms"] > 0 and row["compile_s"] >= 0
        assert row["images_per_sec_min"] <= row["images_per_sec"] <= row["images_per_sec_max"]
        assert row["mfu"] is None  # no known peak for a CPU unless --peak_tflops is given


def test_mfu_uses_analytic_flops():
    result = benchmark.benchmark("resnet8", 4, 8, "float32", ["jax"], 1, 1, ["train"],
                                 num_classes=10, peak_tflops=1.0)
    row = result["results"][0]
    macs = benchmark.models.forward_macs(benchmark.models.create_model("resnet8",
                                                                       num_classes=10), 8)
    assert row["mfu"] == pytest.approx(row["images_per_sec"] * 6 * macs / 1e12)


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit) as error:
        benchmark.main(["--frameworks", "jax,tensorflow"])
    assert error.value.code == 2


@pytest.mark.slow
def test_input_pipeline_benchmark_runs():
    from resnet_jax.bench import input_pipeline as pipeline_benchmark
    result = pipeline_benchmark.run(batch_size=4, image_size=32, num_images=12, batches=2,
                                    repeats=1, pipelines=("random_access", "random_access_ta_wide",
                                                          "sequential_tfrecord"))
    assert result["images_per_sec"] > 0 and result["cores"] >= 1
    assert result["images_per_sec_per_core"] == pytest.approx(
        result["images_per_sec"] / result["cores"])
    assert result["pipelines"]["sequential_tfrecord"]["images_per_sec"] > 0
    latency = pipeline_benchmark.resume_latency(num_records=64, batch_size=8, image_size=16,
                                                repeats=1)
    assert latency["middle_step"] == 4
    assert all(latency[f"{name}_step_{at}_s"] > 0 for name in ("random_access",
               "sequential_tfrecord") for at in ("0", "middle"))


def test_embedding_rows_compare_jax_torch_and_onnxruntime():
    """The embed mode's three rows run the same network (pooled features) and report a rate."""
    pytest.importorskip("onnxruntime", reason="the onnxruntime row needs the [export] extra")
    result = benchmark.benchmark("resnet8", 4, 16, "float32", ["jax", "torch", "onnxruntime"],
                                 1, 1, ["embed"], num_classes=10)
    rows = {r["framework"]: r for r in result["results"]}
    assert all(r["error"] is None and r["images_per_sec"] > 0 for r in rows.values()), rows


def test_openvino_and_int8_rows_run_the_same_onnx_network():
    """OpenVINO's runtime and onnxruntime's int8 model of the export, beside onnxruntime."""
    pytest.importorskip("onnxruntime", reason="the onnxruntime rows need the [export] extra")
    pytest.importorskip("openvino", reason="the openvino row needs the [bench] extra")
    result = benchmark.benchmark("resnet8", 4, 16, "float32",
                                 ["onnxruntime", "onnxruntime_int8", "openvino"], 1, 1,
                                 ["inference"], num_classes=10)
    rows = {r["framework"]: r for r in result["results"]}
    assert set(rows) == {"onnxruntime", "onnxruntime_int8", "openvino"}
    assert all(r["error"] is None and r["images_per_sec"] > 0 for r in rows.values()), rows


def test_search_benchmark_reports_exact_and_faiss():
    from resnet_jax.bench import search as search_benchmark

    result = search_benchmark.run(gallery_size=2_000, dimension=16, queries=50, clusters=20)
    assert result["exact_s_per_1000_queries"] > 0
    if "faiss_recall_at_k" in result:  # faiss-cpu installed (the search extra)
        assert 0 < result["faiss_recall_at_k"] <= 1
