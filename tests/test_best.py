"""The best checkpoint and early stopping: evaluations every epoch, WORKDIR/best kept apart from
the pruning of the latest checkpoints, a clean early stop that a rerun leaves alone, and the
tools reading the best checkpoint by default."""

import json
import os

import pytest

from resnet_jax.runs import checkpoint, history, records
from resnet_jax.train import loop
from tests.digits_runs import small_digits_config
from tests.train_cli import run_cli, run_tool
from tools.image_folders import write_photo_crops


def _evals(workdir):
    return [row for row in history.read_rows(os.path.join(workdir, "metrics.jsonl"))
            if row["split"] == "eval"]


def test_a_run_that_stops_improving_stops_early_and_keeps_its_best(cache_dir, tmp_path, capsys):
    """At learning rate 0 nothing improves after the first evaluation: with patience 2 the run
    stops at the third, step 12, and the best checkpoint (step 4) outlives keep_checkpoints=1."""
    workdir = str(tmp_path / "run")
    config = small_digits_config(cache_dir, learning_rate=0.0, eval_every_steps=4,
                                 checkpoint_every_steps=4, keep_checkpoints=1,
                                 early_stopping_patience=2, num_train_steps=40)
    result = loop.train_and_evaluate(config, workdir)
    assert result["early_stopped"] and result["step"] == 12
    out = capsys.readouterr().out
    assert ("stopped at step 12 of 40: early stopping: eval_top1 has not improved for 2 "
            "evaluation(s) (best ") in out
    assert [row["step"] for row in _evals(workdir)] == [4, 8, 12]
    assert checkpoint.best_record(workdir) == {"step": 4, "metric": "eval_top1",
                                               "value": _evals(workdir)[0]["top1"]}
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12"]
    assert checkpoint.resolve_step(workdir) == (checkpoint.BEST_DIR, 4)
    assert checkpoint.resolve_step(workdir, "latest") == (checkpoint.LATEST_DIR, 12)
    stopped = records.read_record(workdir, records.EARLY_STOPPING_FILE)
    assert stopped["step"] == 12 and stopped["reason"].startswith("early stopping")
    # the same command again: nothing to do, nothing written
    before = open(os.path.join(workdir, "metrics.jsonl")).read()
    again = loop.train_and_evaluate(config, workdir)
    assert again["early_stopped"] and again["step"] == 12
    assert "stopped early at step 12" in capsys.readouterr().out
    assert open(os.path.join(workdir, "metrics.jsonl")).read() == before


def test_the_best_metric_must_be_the_tasks(cache_dir):
    from resnet_jax import plan as plans

    with pytest.raises(plans.ConfigError, match="best_metric=eval_map: mAP is a multi-label"):
        plans.validate_config(small_digits_config(cache_dir, best_metric="eval_map"))
    with pytest.raises(plans.ConfigError, match="counts evaluations during training"):
        plans.validate_config(small_digits_config(cache_dir, eval_every_steps=-1,
                                                  early_stopping_patience=3))
    # eval_every_steps, where set, takes precedence over a config's eval_every_epochs
    both = plans.resolve(small_digits_config(cache_dir, eval_every_epochs=1.0))
    assert both.loop.eval_interval(both.loop.lengths(1437)) == 12


def test_a_folder_run_evaluates_every_epoch_and_the_tools_use_its_best(tmp_path):
    photos = write_photo_crops(str(tmp_path / "photos"), classes=2, train=8, val=4)
    workdir = str(tmp_path / "run")
    proc = run_cli(["--config.dataset=folder", f"--config.data_dir={photos}",
                    "--config.model=resnet8", "--config.image_size=16",
                    "--config.eval_resize=18", "--config.batch_size=4",
                    "--config.eval_batch_size=4", "--config.num_epochs=8",
                    "--config.learning_rate=0.2", "--config.warmup_epochs=0",
                    "--config.eval_every_epochs=1", "--config.best_metric=eval_top1",
                    "--config.early_stopping_patience=2"], workdir, config="configs/folder.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = _evals(workdir)
    assert [row["step"] for row in evals][:3] == [4, 8, 12]  # 16 images, batch 4: an epoch
    best = max(evals, key=lambda row: row["top1"])  # the first of the highest
    early = records.read_record(workdir, records.EARLY_STOPPING_FILE)
    if early is not None:  # stopped: the last evaluations did not beat the best
        assert early["step"] == evals[-1]["step"]
        assert sum(row["step"] > best["step"] for row in evals) == 2
    else:
        assert evals[-1]["step"] == 32
    proc = run_tool("evaluate.py", ["--workdir", workdir, "--checkpoint", "best", "--json"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    values = json.loads(proc.stdout)  # one JSON object, nothing else on stdout
    assert (values["step"], values["top1"], values["checkpoint"]) == (best["step"],
                                                                      best["top1"], "best")
    proc = run_tool("predict.py", ["--workdir", workdir, "--json",
                                   os.path.join(photos, "val")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"the best checkpoint, step {best['step']}" in proc.stderr
    proc = run_tool("evaluate.py", ["--workdir", workdir, "--checkpoint", "999"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: --checkpoint 999: give best, latest or one of the steps")


@pytest.mark.parametrize("tool", ["train.py", "evaluate.py", "predict.py", "export.py",
                                  "embed.py"])
def test_help_exits_0_and_says_where_the_config_keys_are(tool):
    proc = run_tool(tool, ["--help"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resnet_jax/configs/default.py" in proc.stdout


def test_print_config_prints_what_the_run_would_record(tmp_path):
    proc = run_tool("train.py", ["--config", "configs/folder.py", "--config.model=resnet18",
                                 "--config.optimizer=adamw", "--print_config"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout)
    assert (printed["model"], printed["optimizer"], printed["eval_every_epochs"]) == (
        "resnet18", "adamw", 1.0)
    assert not os.path.exists(tmp_path / "run")
