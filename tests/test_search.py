"""Hyper-parameter search: workers in separate processes sharing one study (a journal file, a
real PostgreSQL server), a killed worker's trial resumed, and the whole search on the digits."""

import collections
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from resnet_jax.experiments import trials
from tests import postgres_server
from tests.train_cli import REPO, BackgroundRun, cli_env


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server on 127.0.0.1: .ci/run's (its URL in the environment) or one this
    module starts, where Debian's postgresql is installed."""
    if os.environ.get(postgres_server.URL_VARIABLE):
        yield os.environ[postgres_server.URL_VARIABLE]
        return
    if postgres_server.binaries() is None:
        pytest.skip("PostgreSQL is not installed here (.ci/run installs Debian's postgresql)")
    url, directory = postgres_server.start()
    yield url
    postgres_server.stop(directory)


def stand_in_workers(workdir, storage, total, count, seconds_per_step=0.0, name="stand-in"):
    """`count` worker processes of tests/search_worker.py, started at once."""
    command = [sys.executable, "tests/search_worker.py", str(workdir), storage, str(total),
               str(seconds_per_step), name]
    return [subprocess.Popen(command, cwd=REPO, env=cli_env(1), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(count)]


def load(workdir, storage, name="stand-in"):
    return trials.open_study(str(workdir), storage, name, "maximize")


@pytest.mark.parametrize("storage", ["journal", "postgresql"])
def test_workers_in_separate_processes_share_one_study(tmp_path, storage, request):
    url = "" if storage == "journal" else request.getfixturevalue("postgres_url")
    name = f"shared-{os.getpid()}-{time.monotonic_ns()}"  # a fresh study on a shared server
    workers = stand_in_workers(tmp_path, url, 9, 3, seconds_per_step=0.02, name=name)
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0], outputs
    study = load(tmp_path, url, name)
    states = [t.state.name for t in study.trials]
    assert [t.number for t in study.trials] == list(range(9))  # the total, not one more
    assert set(states) <= {"COMPLETE", "PRUNED"} and "COMPLETE" in states, states
    ran = collections.Counter()
    for trial in study.trials:
        starts = open(tmp_path / "trials" / f"{trial.number:04d}" / "starts").read().split("\n")
        assert len([s for s in starts if s]) == 1, trial.number  # each trial run once
        ran[starts[0].split()[2]] += 1
    assert sum(ran.values()) == 9 and len(ran) >= 2, ran  # by more than one worker


def test_a_killed_workers_trial_is_resumed_by_the_next_one_not_restarted(tmp_path):
    first = stand_in_workers(tmp_path, "", 3, 1, seconds_per_step=0.5)[0]
    progress = tmp_path / "trials" / "0000" / "done_steps"
    deadline = time.monotonic() + 60
    while not (progress.exists() and progress.read_text() in ("2", "3")):
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()[0]
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    study = load(tmp_path, "")
    assert [t.state.name for t in study.trials] == ["RUNNING"]  # the killed worker's trial

    again = stand_in_workers(tmp_path, "", 4, 1)[0]
    output = again.communicate(timeout=60)[0]
    assert again.returncode == 0, output
    assert f"trial 0: its worker is gone; resuming it in {tmp_path}/trials/0000" in output
    study = load(tmp_path, "")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    starts = (tmp_path / "trials" / "0000" / "starts").read_text().split("\n")
    assert starts[0].startswith("start 0 ") and starts[1].split()[1] in ("2", "3"), starts
    steps = [(r["step"], r["split"]) for r in map(
        json.loads, open(tmp_path / "trials" / "0000" / "metrics.jsonl"))]
    assert len(steps) == len(set(steps))  # the adopter went on from where the trial stopped


SMALL = ["--config.model=resnet8", "--config.num_train_steps=24", "--config.eval_every_steps=4",
         "--config.batch_size=32", "--config.eval_batch_size=360", "--config.log_every_steps=2",
         "--config.checkpoint_every_steps=2", "--config.warmup_epochs=0",
         "--config.progress_bar=false"]


@pytest.mark.slow
def test_two_workers_search_the_digits_and_a_killed_one_is_taken_over(tmp_path):
    """The search as users run it: two workers at once with ASHA over two log-uniform keys, then a
    worker killed with -9 mid-trial and the same command with a larger total."""
    workdir = str(tmp_path / "search")

    def command(total):
        return [sys.executable, "-m", "resnet_jax.experiments.search", "--config",
                "configs/digits.py", "--workdir", workdir, "--space",
                "learning_rate=loguniform:0.02:0.4", "--space",
                "weight_decay=loguniform:1e-5:1e-2", "--trials", str(total), "--pruner", "asha",
                "--min_resource", "4", *SMALL]  # (an epoch is 45 steps: longer than a trial)

    workers = [BackgroundRun(None, str(tmp_path / f"worker{i}"), command=command(8))
               for i in range(2)]
    for worker in workers:
        assert worker.wait(timeout=600) == 0, worker.stderr()[-3000:]
    rows = list(csv.DictReader(open(os.path.join(workdir, "results.csv"))))
    assert sorted(int(r["trial"]) for r in rows) == list(range(8))
    states = collections.Counter(r["state"] for r in rows)
    assert set(states) == {"COMPLETE", "PRUNED"}, states
    assert sum(int(r["steps"]) for r in rows) < 8 * 24
    assert [r["state"] for r in rows].index("PRUNED") == states["COMPLETE"]  # best first
    for row in rows:
        written = [(r["step"], r["split"]) for r in map(
            json.loads, open(os.path.join(row["workdir"], "metrics.jsonl")))]
        assert len(written) == len(set(written)), row["trial"]
        assert max(step for step, _ in written) == int(row["steps"])
    for figure in ("optimization_history.png", "param_importances.png", "eval_curves.png"):
        assert os.path.getsize(os.path.join(workdir, figure)) > 0

    killed = BackgroundRun(None, str(tmp_path / "killed"), command=command(10))
    killed.wait_for_row(2, workdir=os.path.join(workdir, "trials", "0008"), timeout=300)
    killed.signal(signal.SIGKILL)  # mid-trial: trial 8 (or 9, if 8 was pruned at once)
    killed.wait()
    from resnet_jax.experiments import search

    name = search.study_name(workdir, "", "")
    running = [t.number for t in trials.open_study(workdir, "", name, "maximize").trials
               if t.state.name == "RUNNING"]
    assert len(running) == 1, running
    again = BackgroundRun(None, str(tmp_path / "again"), command=command(10))
    assert again.wait(timeout=600) == 0, again.stderr()[-3000:]
    assert f"trial {running[0]}: its worker is gone; resuming it" in again.stdout()
    rows = list(csv.DictReader(open(os.path.join(workdir, "results.csv"))))
    assert sorted(int(r["trial"]) for r in rows) == list(range(10))
    assert all(r["state"] in ("COMPLETE", "PRUNED") for r in rows)
    resumed = [(r["step"], r["split"]) for r in map(json.loads, open(os.path.join(
        workdir, "trials", f"{running[0]:04d}", "metrics.jsonl")))]
    assert len(resumed) == len(set(resumed)) and (2, "train") in resumed

    other = subprocess.run(command(12) + ["--config.num_train_steps=30"], cwd=REPO,
                           env=cli_env(1), capture_output=True, text=True, timeout=120)
    assert other.returncode == 2, other.stderr[-2000:]  # would mix two configs in one study
    assert "num_train_steps=24 there, 30 here" in other.stderr.strip().splitlines()[-1]


def test_a_worker_of_two_processes_runs_each_trial_together(tmp_path):
    """jax.distributed on 127.0.0.1: process 0 chooses, reports and tells; process 1 reads the
    trial's values from the storage and stops at the evaluation where process 0 does."""
    from tests.test_launch import free_port

    address = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "tests/search_worker.py", str(tmp_path), "", "4", "0.02",
               "group"]
    procs = [subprocess.Popen(command + [str(i), "2", address], cwd=REPO, env=cli_env(1),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    study = load(tmp_path, "", "group")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
    for trial in study.trials:
        directory = tmp_path / "trials" / f"{trial.number:04d}"
        followed = [line.split() for line in (directory / "follower_1").read_text().splitlines()]
        assert {float(rate) for _, rate in followed} == {trial.params["learning_rate"]}
        assert int(followed[-1][0]) == int((directory / "done_steps").read_text())
        assert len(followed) == int(followed[-1][0])  # once per step, from step 1


def test_a_mistake_on_the_command_line_is_one_line_and_nothing_is_written(tmp_path):
    workdir = tmp_path / "search"
    proc = subprocess.run(
        [sys.executable, "-m", "resnet_jax.experiments.search", "--config", "configs/digits.py",
         "--workdir", str(workdir), "--space", "learnin_rate=loguniform:0.01:1", "--trials",
         "4"], cwd=REPO, env=cli_env(1), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --space learnin_rate: not a config key (every key is listed in "
        "resnet_jax/configs/default.py)")
    assert not workdir.exists()
