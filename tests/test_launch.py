"""Multi-process runs on one machine: processes on 127.0.0.1 with CPU collectives (gloo).

The launch checks (flags, rendezvous, timeouts) run in-process or as quick subprocesses; the
end-to-end test trains the digits with 2 processes x 2 devices and compares with 1 process.
"""

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from resnet_jax import errors
from resnet_jax.launch import multiprocess
from resnet_jax.runs import checkpoint
from tests.closeness import assert_trees_close
from tests.train_cli import (
    REPO,
    BackgroundRun,
    cli_args,
    cli_env,
    read_metrics,
    reported_lines,
    run_cli,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("flags,message", [
    (("127.0.0.1:1234", 2, None), "--process_id missing"),
    ((None, 2, 0), "--coordinator_address missing"),
    (("127.0.0.1:1234", 2, 2), "--process_id must be in [0, 1] for --num_processes=2, got 2"),
    (("127.0.0.1:1234", 2, -1), "--process_id must be in [0, 1]"),
    (("127.0.0.1:1234", 0, 0), "--num_processes must be >= 1, got 0"),
    (("localhost", 2, 0), "--coordinator_address must be HOST:PORT"),
    (("host:99999", 2, 0), "--coordinator_address must be HOST:PORT"),
])
def test_process_flags_are_checked(flags, message):
    with pytest.raises(ValueError) as error:
        multiprocess.check_process_flags(*flags)
    assert message in str(error.value)


def test_no_flags_and_no_cluster_is_a_single_process():
    assert not multiprocess.check_process_flags(None, None, None)
    assert multiprocess.detected_cluster({}) is None
    assert multiprocess.detected_cluster({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8"}) is None
    assert multiprocess.detected_cluster({"SLURM_STEP_NUM_TASKS": "8"}) == "SLURM"
    assert multiprocess.detected_cluster({"OMPI_COMM_WORLD_SIZE": "4"}) == "Open MPI"
    assert multiprocess.detected_cluster({"TPU_WORKER_HOSTNAMES": "a,b"}) == "Cloud TPU pod slice"
    assert multiprocess.detected_cluster({"TPU_WORKER_HOSTNAMES": "a"}) is None


def rendezvous(processes, num_processes, timeout_s):
    """Runs the rendezvous of the given process ids (with, if a pair, the --num_processes each
    was given) in threads, process 0 coordinating `num_processes`; returns their outcomes."""
    port, outcomes = free_port(), {}

    def run(index, process_id, count):
        try:
            if process_id == 0:
                multiprocess._coordinate(port, count, timeout_s)
            else:
                multiprocess._join("127.0.0.1", port, process_id, count, timeout_s)
            outcomes[index] = "ok"
        except multiprocess.LaunchError as error:
            outcomes[index] = str(error)

    processes = [p if isinstance(p, tuple) else (p, num_processes) for p in processes]
    threads = [threading.Thread(target=run, args=(i, *p)) for i, p in enumerate(processes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s + 30)
    return [outcomes.get(i, "still running") for i in range(len(processes))]


def test_rendezvous_releases_all_processes_together():
    assert rendezvous([0, 1, 2], 3, timeout_s=20) == ["ok", "ok", "ok"]


def test_rendezvous_names_the_missing_process_in_bounded_time():
    start = time.monotonic()
    outcomes = rendezvous([0, 2], 3, timeout_s=2)
    assert outcomes[0] == "only 2 of 3 processes joined within 2 s; missing process id(s) [1]"
    assert outcomes[1].startswith("process 2: ")
    assert time.monotonic() - start < 15


def test_rendezvous_refuses_a_duplicate_id_and_a_different_process_count():
    duplicate = "two processes were started with --process_id=1"
    assert all(duplicate in outcome for outcome in rendezvous([0, 1, 1], 3, timeout_s=20))
    mismatch = "process 1 was started with --num_processes=3, process 0 with 2"
    assert all(mismatch in outcome for outcome in rendezvous([0, (1, 3)], 2, timeout_s=20))


def test_unreachable_coordinator_is_one_line_exit_1_within_the_timeout(tmp_path):
    start = time.monotonic()
    proc = run_cli([f"--coordinator_address=127.0.0.1:{free_port()}", "--num_processes=2",
                    "--process_id=1", "--distributed_timeout_s=3"], str(tmp_path / "w"),
                   timeout=60)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not reach the coordinator at 127.0.0.1:" in errors[0]
    assert "within 3 s" in errors[0] and "Traceback" not in proc.stderr
    assert time.monotonic() - start < 40
    assert not os.path.exists(tmp_path / "w")


def test_out_of_range_process_id_is_one_line_exit_2(tmp_path):
    proc = run_cli(["--coordinator_address=127.0.0.1:1234", "--num_processes=2",
                    "--process_id=2"], str(tmp_path / "w"), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --process_id must be in [0, 1] for --num_processes=2, got 2")


@contextlib.contextmanager
def processes(commands, env, timeout_s):
    """Starts the commands, yields their results (returncode, stdout, stderr) when all ended;
    kills every one still running on the way out, whatever happened."""
    procs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for command in commands]
    try:
        deadline = time.monotonic() + timeout_s
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
            results.append((proc.returncode, out, err))
        yield results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_two_processes_match_one_and_resume_elastically(tmp_path, cache_dir):
    """2 processes x 2 devices train as 1 process x 2 devices does with the same global batch
    (global batch norm, every eval example counted once), write one set of metrics and
    checkpoints, and their checkpoint continues in 1 process x 2 devices exactly where it
    stopped.

    Never more simulated devices in one process than this machine's 2 cores: XLA:CPU runs the
    in-process collectives of all its devices on one thread pool of the core count, and with 4
    devices on 2 busy cores a collective waited past XLA's 40 s limit and aborted the process
    (2 of 14 runs of the 1 x 4 command with 3 CPU hogs beside it; 0 of 14 with 2 devices).

    float64, as in test_sharding.py: in float32 the reduction order alone moves parameters by
    ~1e-3 relative within a few steps, which would blur the comparison. Measured worst relative
    difference with resnet8: 0 at steps 12 and 24 (bitwise equal; with resnet20 it was 1.9e-9
    at step 24, after the resume on 2 devices, whose reductions can round differently: float64
    rounding, amplified by 12 more steps). A duplicated or dropped example, or per-process
    batch norm, shows at 1e-3 or more. resnet8 because what is checked is the plumbing, and
    the four train.py processes each compile their own program (55 -> 39 s per process).
    """
    common = [f"--config.{k}={v}" for k, v in dict(
        model="resnet8", num_train_steps=24, batch_size=32, eval_batch_size=48,
        log_every_steps=6, checkpoint_every_steps=12, eval_every_steps=12, dtype="float64",
        compilation_cache_dir=cache_dir).items()]
    reference, multi = str(tmp_path / "one_process"), str(tmp_path / "two_processes")
    proc = run_cli(common, reference, devices=2)
    assert proc.returncode == 0, proc.stderr[-2000:]

    address = f"127.0.0.1:{free_port()}"
    commands = [cli_args(common + ["--config.stop_after_steps=12", "--coordinator_address",
                                   address, "--num_processes=2", f"--process_id={i}"], multi)
                for i in range(2)]
    with processes(commands, cli_env(devices=2), timeout_s=300) as results:
        for returncode, _out, err in results:
            assert returncode == 0, err[-3000:]
    (_, out0, _), (_, out1, _) = results
    assert "batch 32 over 4 device(s) in 2 processes" in out0
    assert "stopped at step 12 of 24" in out0
    assert "resnet8" not in out1 and "stopped" not in out1  # process 0 speaks for the run

    proc = run_cli(common, multi, devices=2)  # elastic: 2 processes x 2 -> 1 process x 2
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "steps 12..24" in proc.stdout

    worst = [assert_trees_close(checkpoint.load_state(multi, step),
                                checkpoint.load_state(reference, step), 1e-7) for step in (12, 24)]
    print(f"worst relative parameter difference at steps 12, 24: {worst}")
    ones, multis = read_metrics(reference), read_metrics(multi)
    assert [(m["step"], m["split"]) for m in multis] == [(m["step"], m["split"]) for m in ones]
    for a, b in zip(ones, multis):  # metric sums are float32: order moves the loss ~1e-7
        assert a["top1"] == b["top1"] and a["top5"] == b["top5"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert [m["count"] for m in multis if m["split"] == "eval"] == [360, 360]
    assert sorted(os.listdir(os.path.join(multi, "checkpoints"))) == ["12", "24"]


@pytest.mark.slow
def test_sigterm_to_one_process_stops_all_at_the_same_step(tmp_path, cache_dir):
    """A preemption notice reaching one host: every process saves the same step together (JAX's
    preemption sync point) and exits with the interrupted status; one process continues."""
    args = [f"--config.{k}={v}" for k, v in dict(
        model="resnet8", num_train_steps=600, batch_size=32, eval_batch_size=48,
        log_every_steps=10, checkpoint_every_steps=1000, compilation_cache_dir=cache_dir).items()]
    workdir, address = str(tmp_path / "run"), f"127.0.0.1:{free_port()}"
    runs = [BackgroundRun(None, workdir + ("" if i == 0 else f".{i}"), devices=2,
                          command=cli_args(args + ["--coordinator_address", address,
                                                   "--num_processes=2", f"--process_id={i}"],
                                           workdir))
            for i in range(2)]
    try:
        runs[0].wait_for_row(20)
        runs[1].signal(signal.SIGTERM)
        statuses = [run.wait(timeout=120) for run in runs]
    finally:
        for run in runs:
            run.wait(timeout=1)
    assert statuses == [errors.Interrupted.exit_status] * 2, runs[1].stderr()[-3000:]
    stops = [[line for line in reported_lines(run.stderr()) if "stopped at step" in line]
             for run in runs]
    assert all(len(lines) == 1 for lines in stops), stops
    step = int(stops[0][0].split("stopped at step ")[1].split()[0])
    assert stops[1][0] == stops[0][0]  # the same step, the same checkpoint
    assert os.listdir(os.path.join(workdir, "checkpoints")) == [str(step)]

    proc = run_cli(args + [f"--config.stop_after_steps={step + 10}"], workdir, devices=2)
    assert proc.returncode == 0, proc.stderr[-2000:]  # continued by a single process
    assert f"steps {step}..600" in proc.stdout
