"""Fault tests: what a cluster, a disk or a user does to a run, and what the run does about it.

Each runs train.py (or the loop) on the digits with resnet8 at small sizes, does the fault, and
checks the contract: one line, the documented exit status (resnet_jax/errors.py), nothing lost,
and, where the run continues, a result equal bit for bit to an uninterrupted run.
"""

import glob
import json
import os
import shutil
import signal
import subprocess

import jax
import numpy as np
import pytest

from resnet_jax import errors
from resnet_jax.runs import checkpoint, history
from resnet_jax.runs import workdir as workdir_lib
from resnet_jax.train import loop
from tests.digits_runs import small_digits_config
from tests.train_cli import (
    REPO,
    BackgroundRun,
    cli_args,
    cli_env,
    read_metrics,
    reported_lines,
    run_cli,
)

STEPS = 120


def fault_args(cache_dir, **overrides):
    """120 steps (long enough to be signalled mid-run), periodic checkpoints far apart."""
    values = dict(model="resnet8", num_train_steps=STEPS, batch_size=32, eval_batch_size=120,
                  log_every_steps=10, checkpoint_every_steps=1000, compilation_cache_dir=cache_dir)
    values.update(overrides)
    return [f"--config.{k}={v}" for k, v in values.items()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """The uninterrupted run the faulted ones must equal."""
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    proc = run_cli(fault_args(cache_dir), workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return workdir


def assert_same_run(workdir, reference_workdir):
    assert read_metrics(workdir) == read_metrics(reference_workdir)
    ours, theirs = checkpoint.load_state(workdir), checkpoint.load_state(reference_workdir)
    assert int(ours["step"]) == STEPS
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_saves_the_step_reached_and_the_same_command_continues(
        tmp_path, cache_dir, reference, signum):
    workdir = str(tmp_path / "run")
    run = BackgroundRun(fault_args(cache_dir), workdir)
    run.wait_for_row(20)
    run.signal(signum)
    assert run.wait(timeout=60) == errors.Interrupted.exit_status, run.stderr()[-2000:]
    name = signal.Signals(signum).name
    stopped = [line for line in reported_lines(run.stderr()) if "stopped at step" in line]
    assert len(stopped) == 1 and stopped[0].startswith(f"{name}: stopped at step ")
    step = int(stopped[0].split("stopped at step ")[1].split()[0])
    assert 20 <= step < STEPS
    assert stopped[0].endswith(f"checkpoint saved in {workdir}/checkpoints/{step}; run the same "
                               f"command to continue")
    assert os.listdir(os.path.join(workdir, "checkpoints")) == [str(step)]
    assert "Traceback" not in run.stderr()

    proc = run_cli(fault_args(cache_dir), workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"steps {step}..{STEPS}" in proc.stdout
    assert_same_run(workdir, reference)


def test_a_second_ctrl_c_exits_at_once_and_the_run_can_still_continue(
        tmp_path, cache_dir, reference):
    workdir = str(tmp_path / "run")
    run = BackgroundRun(fault_args(cache_dir), workdir)
    run.wait_for_row(20)
    run.signal(signal.SIGINT)
    run.wait_for_text("SIGINT: stopping after this step")
    run.signal(signal.SIGINT)
    assert run.wait(timeout=60) == errors.INTERRUPTED_TWICE
    assert "SIGINT again: exiting now, without saving" in run.stderr()
    assert os.path.exists(os.path.join(workdir, workdir_lib.LOCK_NAME))  # no time to clean up

    proc = run_cli(fault_args(cache_dir), workdir)  # the dead run's lock is taken over
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"warning: taking over {workdir}/lock from a run that is gone (pid {run.pid}" \
        in proc.stderr
    assert_same_run(workdir, reference)


def test_kill_9_while_checkpoints_are_written_resumes_bitwise(tmp_path, cache_dir, reference):
    """A checkpoint every step, so that the kill lands while one is being written."""
    workdir = str(tmp_path / "run")
    run = BackgroundRun(fault_args(cache_dir, checkpoint_every_steps=1), workdir)
    run.wait_for_row(30)
    run.signal(signal.SIGKILL)
    run.wait(timeout=60)
    proc = run_cli(fault_args(cache_dir), workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same_run(workdir, reference)


def test_divergence_stops_without_saving_a_non_finite_state(tmp_path, cache_dir):
    workdir = str(tmp_path / "run")
    proc = run_cli(fault_args(cache_dir, learning_rate=1e4, checkpoint_every_steps=2),
                   workdir)
    assert proc.returncode == errors.Diverged.exit_status, proc.stderr[-2000:]
    lines = reported_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: training diverged at step "), lines
    assert "are not finite" in lines[0] and "mean loss " in lines[0]
    assert "Traceback" not in proc.stderr
    steps = sorted(int(step) for step in os.listdir(os.path.join(workdir, "checkpoints")))
    for step in steps:  # every checkpoint that was saved holds only finite numbers
        state = checkpoint.load_state(workdir, step)
        assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(state))
    if steps:
        assert f"the last checkpoint, step {steps[-1]}, is finite and kept" in lines[0]


def test_a_second_run_on_the_same_workdir_is_refused(tmp_path, cache_dir):
    """The first run is made long enough to be still training when the second one starts (it
    is then stopped with SIGTERM): the second is refused before it writes anything. (The second
    runs in-process: a second train.py would spend its start-up competing with the first for
    the two cores; UserError's exit status 2 is tested in test_errors.py.)"""
    workdir = str(tmp_path / "run")
    first = BackgroundRun(fault_args(cache_dir, num_train_steps=100_000), workdir)
    first.wait_for_row(10)
    with pytest.raises(workdir_lib.WorkdirInUse) as refused:  # a UserError: exit status 2
        loop.train_and_evaluate(small_digits_config(cache_dir), workdir)
    assert str(refused.value).startswith(f"{workdir} is in use by another run (pid "
                                         f"{first.pid} on host ")
    assert str(refused.value).endswith("wait for it to end or use another --workdir")
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=60) == errors.Interrupted.exit_status, first.stderr()[-2000:]
    rows = [(row["step"], row["split"]) for row in read_metrics(workdir)]
    assert rows == sorted(set(rows)) and rows  # each row once, in order: one writer


# Damage done to the newest checkpoint (12 of 6, 12) of a run stopped at step 12.
def _largest_data_file(step_dir):
    return max(glob.glob(os.path.join(step_dir, "state", "ocdbt.process_0", "d", "*")),
               key=os.path.getsize)


def _truncate(step_dir):
    with open(_largest_data_file(step_dir), "r+b") as f:
        f.truncate(100)


def _zero_fill(step_dir):
    path = _largest_data_file(step_dir)
    with open(path, "r+b") as f:
        f.write(bytes(os.path.getsize(path)))


DAMAGE = {
    "truncated": _truncate,
    "zero-filled": _zero_fill,
    "state _METADATA deleted": lambda d: os.remove(os.path.join(d, "state", "_METADATA")),
    "meta/metadata deleted": lambda d: os.remove(os.path.join(d, "meta", "metadata")),
    "emptied": lambda d: (shutil.rmtree(d), os.mkdir(d)),
}


@pytest.fixture(scope="module")
def stopped_at_12(tmp_path_factory, cache_dir):
    workdir = str(tmp_path_factory.mktemp("stopped") / "run")
    loop.train_and_evaluate(small_digits_config(cache_dir, stop_after_steps=12,
                                                checkpoint_every_steps=6), workdir)
    return workdir


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(
        tmp_path, stopped_at_12, finished_run, cache_dir, capfd, damage):
    workdir = str(tmp_path / "run")
    shutil.copytree(stopped_at_12, workdir)
    DAMAGE[damage](os.path.join(workdir, "checkpoints", "12"))
    loop.train_and_evaluate(small_digits_config(cache_dir), workdir)

    lines = reported_lines(capfd.readouterr().err)
    assert lines[0].startswith(f"warning: checkpoint 12 cannot be read ({workdir}/checkpoints/"
                               f"12/"), lines
    assert lines[1] == (f"warning: moved damaged checkpoint 12 to {workdir}/"
                        f"damaged_checkpoints/12")
    assert len(lines) == 2
    assert os.path.isdir(os.path.join(workdir, "damaged_checkpoints", "12"))  # kept, aside
    reference, _ = finished_run
    assert read_metrics(workdir) == read_metrics(reference)
    for a, b in zip(jax.tree_util.tree_leaves(checkpoint.load_state(workdir)),
                    jax.tree_util.tree_leaves(checkpoint.load_state(reference))):
        np.testing.assert_array_equal(a, b)


def test_no_readable_checkpoint_is_one_error_and_nothing_is_changed(
        tmp_path, stopped_at_12, cache_dir):
    workdir = str(tmp_path / "run")
    shutil.copytree(stopped_at_12, workdir)
    for step in ("6", "12"):
        _truncate(os.path.join(workdir, "checkpoints", step))
    before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    with pytest.raises(errors.StorageError, match=r"no checkpoint in .* can be read \(steps "
                                                  r"12, 6\); nothing was changed"):
        loop.train_and_evaluate(small_digits_config(cache_dir), workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
    assert not os.path.exists(os.path.join(workdir, "damaged_checkpoints"))


def test_a_torn_metrics_line_is_dropped_and_other_damage_is_named(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10, "split": "train"}\n{"step": 20, "spl')
    assert history.read_rows(str(path)) == [{"step": 10, "split": "train"}]
    assert "dropped an incomplete last line" in capsys.readouterr().err
    path.write_text('{"step": 10, "spl\n{"step": 20, "split": "train"}\n')
    with pytest.raises(errors.StorageError, match=f"{path}, line 1, is not a JSON object"):
        history.read_rows(str(path))


def test_a_workdir_that_is_a_file_or_cannot_be_created_is_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    proc = run_cli(["--config.model=resnet8"], str(a_file))
    assert proc.returncode == errors.StorageError.exit_status
    assert reported_lines(proc.stderr) == [f"error: --workdir {a_file} exists and is not a "
                                           f"directory"]
    with pytest.raises(errors.StorageError, match="cannot create --workdir /proc/resnet_jax"):
        workdir_lib.create("/proc/resnet_jax/run")


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock_path = tmp_path / workdir_lib.LOCK_NAME
    lock_path.write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid,
                                     "started": "earlier"}))
    lock = workdir_lib.Lock(str(tmp_path))
    lock.acquire()
    assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    with pytest.raises(workdir_lib.WorkdirInUse, match=f"pid {os.getpid()} on host"):
        workdir_lib.Lock(str(tmp_path)).acquire()  # a live holder: refused
    lock.release()
    assert not lock_path.exists()


def _private_mount_available() -> str | None:
    """Why a private tmpfs mount is not available here (None if it is)."""
    if shutil.which("unshare") is None:
        return "no unshare(1) on this machine"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /tmp"], capture_output=True)
    if probe.returncode:
        return (f"this machine does not allow private tmpfs mounts (user namespaces): "
                f"{probe.stderr.decode().strip()[:200]}")
    return None


def in_private_mount(tmp_path, mount_options, command, after=""):
    """Runs `command` with a fresh tmpfs (mount_options) at tmp_path/mnt, in a private mount
    namespace (no root needed where user namespaces are allowed); `after` runs in it too."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    script = (f"mount -t tmpfs -o {mount_options} tmpfs {mount} && cd {REPO} && "
              f"{' '.join(command)}; status=$?; {after} exit $status")
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           script], env=cli_env(1), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.skipif(_private_mount_available() is not None,
                    reason=str(_private_mount_available()))
def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, cache_dir):
    """A 2 MiB filesystem: resnet8's checkpoints (~0.6 MB each) fill it within a few saves."""
    workdir = str(tmp_path / "mnt" / "run")
    copy = tmp_path / "copy"
    proc = in_private_mount(
        tmp_path, "size=2m", cli_args(fault_args(cache_dir, checkpoint_every_steps=5,
                                                 keep_checkpoints=5), workdir),
        after=f"cp -a {workdir} {copy};")
    assert proc.returncode == errors.StorageError.exit_status, proc.stderr[-3000:]
    lines = reported_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: No space left on device"), lines
    assert "free some space and run the same command to continue" in lines[0]
    assert "Traceback" not in proc.stderr
    steps = sorted(int(s) for s in os.listdir(copy / "checkpoints") if s.isdigit())
    assert steps, "no checkpoint survived"
    assert int(checkpoint.load_state(str(copy), steps[-1])["step"]) == steps[-1]
    history.read_rows(str(copy / "metrics.jsonl"))  # readable: at most a torn last line


@pytest.mark.skipif(_private_mount_available() is not None,
                    reason=str(_private_mount_available()))
def test_a_read_only_workdir_is_one_line(tmp_path, cache_dir):
    workdir = str(tmp_path / "mnt" / "run")
    proc = in_private_mount(tmp_path, "ro", cli_args(fault_args(cache_dir), workdir))
    assert proc.returncode == errors.StorageError.exit_status, proc.stderr[-3000:]
    assert reported_lines(proc.stderr) == [
        f"error: cannot create --workdir {workdir}: Read-only file system: {workdir}"]


def test_a_run_in_a_thread_trains_without_signal_handlers(tmp_path, cache_dir):
    """Python delivers signals to the main thread only; a run started from another thread (a
    notebook's worker, a sweep) must still train."""
    import threading

    results = []
    thread = threading.Thread(target=lambda: results.append(loop.train_and_evaluate(
        small_digits_config(cache_dir), str(tmp_path / "run"))))
    thread.start()
    thread.join()
    assert results and results[0]["step"] == 24
