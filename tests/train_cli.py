"""Running train.py as users do, in subprocesses with a chosen number of simulated devices."""

import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_env(devices: int) -> dict:
    """The test session's environment (and XLA flags), with `devices` simulated CPU devices."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                   os.environ.get("XLA_FLAGS", ""))
    return {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
            "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={devices}".strip()}


def cli_args(args, workdir, config="configs/digits.py") -> list:
    return [sys.executable, "train.py", "--config", config, "--workdir", workdir,
            "--config.progress_bar=False", *args]


def run_cli(args, workdir, devices=1, timeout=300, config="configs/digits.py",
            env=None) -> subprocess.CompletedProcess:
    """train.py as a user runs it; `env`: variables to set besides the test session's."""
    return subprocess.run(cli_args(args, workdir, config), cwd=REPO,
                          env={**cli_env(devices), **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def run_tool(script: str, args, devices=1, timeout=300, env=None) -> subprocess.CompletedProcess:
    """One of the repository's command-line scripts (evaluate.py, predict.py, export.py...)."""
    return subprocess.run([sys.executable, script, *args], cwd=REPO,
                          env={**cli_env(devices), **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def read_metrics(workdir, drop=("images_per_sec", "input_wait_fraction")) -> list:
    """metrics.jsonl's lines, without the timing-dependent values (`drop`)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in f]


class BackgroundRun:
    """train.py in a subprocess that the test can signal while it trains; its stdout and
    stderr go to files beside the workdir, readable while it runs."""

    def __init__(self, args, workdir, devices=1, command=None):
        self.workdir = workdir
        self._out = open(workdir.rstrip("/") + ".stdout", "w+")
        self._err = open(workdir.rstrip("/") + ".stderr", "w+")
        self.proc = subprocess.Popen(command or cli_args(args, workdir), cwd=REPO,
                                     env=cli_env(devices), stdout=self._out, stderr=self._err,
                                     text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for_row(self, step: int, timeout: float = 180, workdir: str | None = None) -> None:
        """Returns once metrics.jsonl (of `workdir`, by default the run's) has a row of `step`
        (the run is training past it)."""
        path = os.path.join(workdir or self.workdir, "metrics.jsonl")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the run ended (status {self.proc.returncode}) before "
                                     f"step {step}: {self.stderr()[-2000:]}")
            if os.path.exists(path) and f'"step": {step},' in open(path).read():
                return
            time.sleep(0.02)
        raise AssertionError(f"no metrics row of step {step} within {timeout} s")

    def wait_for_text(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{text!r} not in stderr: {self.stderr()[-2000:]}")
            time.sleep(0.02)

    def signal(self, signum) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def stdout(self) -> str:
        self._out.flush()
        return open(self._out.name).read()

    def stderr(self) -> str:
        self._err.flush()
        return open(self._err.name).read()


def reported_lines(stderr: str) -> list:
    """The lines a run reported to its user (errors, warnings, its stop line), without the
    logs of XLA, TensorFlow and absl."""
    return [line for line in stderr.splitlines()
            if line.startswith(("error:", "warning:", "SIGTERM", "SIGINT", "SIGHUP"))]
