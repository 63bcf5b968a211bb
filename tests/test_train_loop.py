"""Training end to end on the digits: outputs, bitwise resume, bad input."""

import hashlib
import os
import shutil

import jax
import numpy as np
import pytest

from resnet_jax import plan as plans
from resnet_jax.plan import data_spec
from resnet_jax.runs import checkpoint
from resnet_jax.train import loop
from tests.digits_runs import small_digits_config
from tests.train_cli import read_metrics, reported_lines, run_cli


def test_run_writes_metrics_report_events_and_checkpoints(finished_run):
    workdir, result = finished_run
    lines = read_metrics(workdir, drop=())
    train = [line for line in lines if line["split"] == "train"]
    evals = [line for line in lines if line["split"] == "eval"]
    assert [line["step"] for line in train] == [6, 12, 18, 24]
    assert [line["step"] for line in evals] == [12, 24]
    assert set(train[0]) == {"step", "split", "loss", "top1", "top5", "learning_rate",
                             "images_per_sec", "input_wait_fraction"}
    assert all(0.0 <= line["input_wait_fraction"] <= 1.0 for line in train)
    assert set(evals[0]) == {"step", "split", "loss", "top1", "top5", "count"}
    assert [line["count"] for line in evals] == [360, 360]
    assert train[-1]["loss"] < train[0]["loss"]
    assert result["count"] == 360 and result["top1"] == evals[-1]["top1"]
    report = open(os.path.join(workdir, "report.txt")).read()
    assert f"top-1 accuracy: {result['top1']:.4f}" in report
    assert "precision" in report and "recall" in report and "f1-score" in report
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "24"]


def test_interrupted_run_resumes_bitwise(tmp_path, finished_run, cache_dir):
    """Stopped at step 18 (checkpoint 12 and 18, metrics rows to 18), then, as after a crash
    before checkpoint 18 was complete: its directory gone and a torn last metrics line. The
    same command resumes from 12 and ends equal to the uninterrupted run, bit for bit, with
    each metrics row once, in metrics.jsonl and in TensorBoard."""
    workdir, _ = finished_run
    interrupted = str(tmp_path / "interrupted")
    partial = loop.train_and_evaluate(small_digits_config(cache_dir, stop_after_steps=18),
                                      interrupted)
    assert partial == {"step": 18}
    shutil.rmtree(os.path.join(interrupted, "checkpoints", "18"))
    with open(os.path.join(interrupted, "metrics.jsonl"), "a") as f:
        f.write('{"step": 24, "split": "tr')
    loop.train_and_evaluate(small_digits_config(cache_dir), interrupted)
    assert read_metrics(interrupted) == read_metrics(workdir)
    ours, reference = checkpoint.load_state(interrupted), checkpoint.load_state(workdir)
    assert int(ours["step"]) == 24
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(reference)):
        np.testing.assert_array_equal(a, b)
    assert tensorboard_scalars(interrupted) == tensorboard_scalars(workdir)


def tensorboard_scalars(workdir) -> list:
    """(tag, step) of every scalar in the workdir's TensorBoard event files, in order."""
    import tensorflow as tf

    scalars = []
    for name in sorted(os.listdir(workdir)):
        if name.startswith("events.out.tfevents"):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(workdir, name)):
                scalars += [(value.tag, event.step) for value in event.summary.value]
    return scalars


def test_a_finished_run_is_a_no_op(finished_run, cache_dir, capfd):
    workdir, result = finished_run
    before = _tree_digest(workdir)
    again = loop.train_and_evaluate(small_digits_config(cache_dir), workdir)
    assert _tree_digest(workdir) == before
    assert f"{workdir} finished at step 24" in capfd.readouterr().out
    assert again["top1"] == result["top1"] and again["step"] == 24


def _tree_digest(path):
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as f:
                digest.update(name.encode() + f.read())
    return digest.hexdigest()


@pytest.mark.parametrize("args,devices,message", [
    (["--config.model=resnet19"], 1, "unknown model 'resnet19'; valid models:"),
    (["--config.dataset=mnist"], 1, "unknown dataset 'mnist'; valid datasets:"),
    (["--config.batch_size=12"], 8, "batch_size=12 must be a positive multiple of the device "
                                    "count (8)"),
    (["--config.no_such_key=1"], 1, "unknown config key 'no_such_key'; every key is listed"),
    (["--config.learning_rat=1"], 1, "unknown config key 'learning_rat' (did you mean "
                                     "'learning_rate'?)"),
    (["--config.dataset=imagenet2012", "--config.data_dir=/nonexistent"], 1,
     "ILSVRC2012_img_train.tar"),
])
def test_bad_input_is_one_line_and_exit_status_2(tmp_path, args, devices, message):
    proc = run_cli(args, str(tmp_path / "w"), devices=devices)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("overrides,message", [
    ({"grad_accumulation_steps": 3}, "batch_size=32 must be a positive multiple of the device "
                                     "count (2) times grad_accumulation_steps (3); try 30"),
    ({"grad_accumulation_steps": 0}, "grad_accumulation_steps must be >= 1, got 0"),
    ({"bn_group_size": 12}, "bn_group_size=12 must be 0 (global batch) or divide the "
                            "batch_size of 32"),
    ({"bn_group_size": 16, "grad_accumulation_steps": 4}, "bn_group_size=16 must be 0 (global "
                                                          "batch) or divide the micro-batch of 8"),
    ({"eval_batch_size": 49}, "eval_batch_size=49 must be a positive multiple of the device "
                              "count (2); try 48"),
    ({"learning_rate": -0.1}, "learning_rate must be >= 0 (a negative rate climbs the loss), "
                              "got -0.1"),
    ({"checkpoint_every_steps": 0}, "checkpoint_every_steps must be >= 1 (a run also saves "
                                    "whenever it stops), got 0"),
    ({"log_every_steps": 0}, "log_every_steps must be >= 1, got 0"),
    ({"keep_checkpoints": 0}, "keep_checkpoints must be >= 1 (with none kept, nothing could "
                              "resume), got 0"),
    ({"momentum": 1.0}, "momentum must be in [0, 1), got 1.0"),
])
def test_config_errors_are_one_line_before_anything_runs(cache_dir, overrides, message):
    assert jax.device_count() == 2  # conftest.py
    with pytest.raises(plans.ConfigError) as error:
        plans.validate_config(small_digits_config(cache_dir, **overrides))
    assert str(error.value) == message


def test_workdir_of_another_model_is_refused_untouched(finished_run):
    workdir, _ = finished_run
    before = _tree_digest(workdir)
    proc = run_cli(["--config.model=resnet32"], workdir)
    assert proc.returncode == 2
    [line] = reported_lines(proc.stderr)  # every key that differs, named, in one line
    assert line.startswith(f"error: {workdir}/config.json records another config for this "
                           f"run (")
    assert "model='resnet8' there, 'resnet32' here" in line
    assert _tree_digest(workdir) == before


def test_training_on_jpeg_files_normalises_uint8_pixels_on_the_device(tmp_path, cache_dir):
    """Imagenette-format JPEGs end to end: uint8 batches, normalised inside the jitted steps."""
    from resnet_jax.data import batching, datasets, synthetic

    images = synthetic.photo_like_images(20)
    synthetic.write_jpeg_dataset(str(tmp_path / "data"), {
        "train": images[:14], "validation": images[14:]})
    config = small_digits_config(
        cache_dir, dataset="imagenette", data_dir=str(tmp_path / "data"), image_size=8,
        eval_resize=9, num_train_steps=4, batch_size=4, eval_batch_size=4, log_every_steps=2,
        eval_every_steps=0, checkpoint_every_steps=4, warmup_epochs=0.0)
    source = datasets.create_source(data_spec(config))
    assert source.info.pixel_normalization is not None
    assert next(batching.train_batches(source, 4, 0, 1, seed=0))["image"].dtype == np.uint8

    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(config, workdir)
    lines = read_metrics(workdir, drop=())
    assert [line["step"] for line in lines if line["split"] == "train"] == [2, 4]
    final = [line for line in lines if line["split"] == "eval"]
    assert final[-1]["count"] == 6  # every held-out image once, the padded batch masked
    assert all(np.isfinite(line["loss"]) for line in lines)


def test_a_run_prints_nothing_from_tensorflow_onednn_or_absl(tmp_path):
    """TensorFlow's C++ start-up notices reach stderr whatever TF_CPP_MIN_LOG_LEVEL says;
    lazy_tf drops them. Run as a user does: no TF_CPP_MIN_LOG_LEVEL in the environment."""
    import re
    import subprocess

    from tests.train_cli import REPO, cli_args, cli_env

    env = cli_env(1)
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    proc = subprocess.run(cli_args(["--config.model=resnet8", "--config.num_train_steps=2",
                                    "--config.eval_every_steps=2"], str(tmp_path / "run")),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    noise = [line for line in proc.stderr.splitlines()
             if re.search(r"(?i)onednn|absl|tensorflow|^[IWEF]\d{4} ", line)]
    assert not noise, proc.stderr
