"""Sweeps and the degradation experiment: grids, resumable sub-runs, results, figures."""

import csv
import os
import signal
import sys

import pytest

from resnet_jax.configs import digits
from resnet_jax.experiments import degradation, sweep
from tests.train_cli import BackgroundRun, read_metrics, run_tool

SMALL = ["--config.model=resnet8", "--config.num_train_steps=12", "--config.batch_size=32",
         "--config.eval_batch_size=120", "--config.log_every_steps=6",
         "--config.checkpoint_every_steps=6", "--config.progress_bar=false"]


def test_sets_are_typed_as_the_config_and_the_grid_is_their_product():
    grid = sweep.parse_sets(["learning_rate=0.05,0.1", "weight_decay=0,5e-4",
                             "nesterov=true,false", "num_train_steps=10"], digits.get_config())
    assert grid == {"learning_rate": [0.05, 0.1], "weight_decay": [0.0, 5e-4],
                    "nesterov": [True, False], "num_train_steps": [10]}
    planned = sweep.runs(grid)
    assert len(planned) == 8
    assert planned[0].name == "learning_rate=0.05,weight_decay=0.0,nesterov=True,num_train_steps=10"
    sample = sweep.runs(grid, sample=3, seed=1)
    assert len(sample) == 3 and sample == sweep.runs(grid, sample=3, seed=1)
    assert set(r.name for r in sample) <= set(r.name for r in planned)


@pytest.mark.parametrize("sets, message", [
    (["learnin_rate=0.1"], "--set learnin_rate: not a config key"),
    (["learning_rate=fast"], "--set learning_rate: 'fast' is not a number"),
    (["learning_rate"], "expected KEY=VALUE1,VALUE2,..."),
    ([], "give at least one --set"),
])
def test_sets_that_cannot_be_swept_are_one_line_errors(sets, message):
    with pytest.raises(sweep.SweepError, match=message):
        sweep.parse_sets(sets, digits.get_config())


def test_a_killed_sweep_reruns_only_what_is_unfinished(tmp_path):
    workdir = str(tmp_path / "sweep")
    command = [sys.executable, "-m", "resnet_jax.experiments.sweep", "--config",
               "configs/digits.py", "--workdir", workdir, "--set", "learning_rate=0.05,0.1",
               "--set", "weight_decay=0,5e-4", *SMALL]
    planned = sweep.runs({"learning_rate": [0.05, 0.1], "weight_decay": [0.0, 5e-4]})
    dirs = [sweep.run_workdir(workdir, run) for run in planned]
    first = BackgroundRun(None, str(tmp_path / "first"), command=command)
    first.wait_for_row(6, workdir=dirs[1])  # the second run is training
    first.signal(signal.SIGTERM)
    assert first.wait() == 3, first.stderr()[-2000:]  # stopped with a checkpoint
    # Where the signal landed (in the second run, or just after it) decides what is done.
    done = [d for d in dirs if os.path.exists(os.path.join(d, "metrics.jsonl"))
            and any(r["split"] == "eval" for r in read_metrics(d))]
    assert 1 <= len(done) < 4 and done == dirs[:len(done)]

    rerun = BackgroundRun(None, str(tmp_path / "rerun"), command=command)
    assert rerun.wait(timeout=300) == 0, rerun.stderr()[-2000:]
    out = rerun.stdout()
    for run, run_dir in zip(planned, dirs):
        finished_before = run_dir in done  # known to the sweep's study: not started again
        assert (f"in {run_dir}\n" in out) == (not finished_before), run.name
        steps = [(r["step"], r["split"]) for r in read_metrics(run_dir)]
        assert steps == [(6, "train"), (12, "train"), (12, "eval")]  # each step once
    assert out.count("train step compiled") == 4 - len(done)  # only the unfinished train
    with open(os.path.join(workdir, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert [float(r["eval_top1"]) for r in rows] == sorted(
        (float(r["eval_top1"]) for r in rows), reverse=True)
    assert os.path.getsize(os.path.join(workdir, "sweep.png")) > 0
    assert "| run | learning_rate | weight_decay |" in open(
        os.path.join(workdir, "results.md")).read()


def test_a_diverged_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    """With a stand-in for the training function: the sweep's own bookkeeping."""
    import json

    from resnet_jax import errors

    workdir = str(tmp_path)
    planned = sweep.runs({"learning_rate": [0.1, 100.0, 0.2]})
    calls = []

    def train(config, run_dir, *, on_evaluation):
        calls.append(config.learning_rate)
        if config.learning_rate > 10:
            raise errors.Diverged("training diverged at step 3: ...")
        os.makedirs(run_dir, exist_ok=True)
        open(os.path.join(run_dir, "config.json"), "w").write("{}")
        with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
            for split in ("train", "eval"):
                f.write(json.dumps({"step": 5, "split": split, "loss": 1.0,
                                    "top1": config.learning_rate}) + "\n")
        return {"step": 5}

    sweep.train_all(digits.get_config(), workdir, planned, train=train)
    assert calls == [0.1, 100.0, 0.2]
    sweep.train_all(digits.get_config(), workdir, planned, train=train)
    assert calls == [0.1, 100.0, 0.2]  # finished and diverged runs are not started again
    rows = sweep.write_results(workdir, planned)
    assert [(r["run"], r["status"]) for r in rows] == [
        ("learning_rate=0.2", "finished"), ("learning_rate=0.1", "finished"),
        ("learning_rate=100.0", "diverged")]


def test_sweep_commands_for_a_scheduler(tmp_path):
    proc = run_tool("-m", ["resnet_jax.experiments.sweep", "--config", "configs/digits.py",
                           "--workdir", "W", "--set", "seed=0,1", "--commands",
                           "--config.model=resnet8"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    assert lines[1].endswith("--workdir W/runs/seed=1 --config.model=resnet8 --config.seed=1")


def test_degradation_trains_both_families_and_draws_the_figure(tmp_path):
    workdir = str(tmp_path / "degradation")
    proc = run_tool("-m", ["resnet_jax.experiments.degradation", "--config", "configs/digits.py",
                           "--workdir", workdir, "--depths", "20", *SMALL[1:]])
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(os.path.join(workdir, "degradation.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["plain20", "resnet20"]
    for row in rows:
        metrics = read_metrics(os.path.join(workdir, "runs", row["model"]))
        assert float(row["eval_error"]) == pytest.approx(1 - metrics[-1]["top1"])
    for extension in ("png", "svg"):
        assert os.path.getsize(os.path.join(workdir, f"degradation.{extension}")) > 0


def test_depths_without_a_model_are_refused():
    with pytest.raises(degradation.UserError, match="there is no CIFAR-family plain21"):
        degradation.planned_runs([21])


def test_a_plain_config_trains_a_net_without_shortcuts():
    """The config's `shortcut` ("A") once turned plain20 into resnet20, silently."""
    from resnet_jax import models
    from resnet_jax.errors import UserError
    from resnet_jax.plan import model_spec

    config = digits.get_config()
    config.model = "plain20"
    assert model_spec(config).create(10, 1).shortcut is None
    config.model = "resnet20"
    assert model_spec(config).create(10, 1).shortcut == "A"
    with pytest.raises(UserError, match="plain20 is a plain net: it has no shortcuts"):
        models.create_model("plain20", num_classes=10, shortcut="A")
