"""Running train.py as users do, in subprocesses with a chosen number of simulated devices."""

import json
import os
import re
import subprocess
import sys

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


def run_cli(args, workdir, devices=1, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(cli_args(args, workdir), cwd=REPO, env=cli_env(devices),
                          capture_output=True, text=True, timeout=timeout)


def read_metrics(workdir, drop=("images_per_sec", "input_wait_fraction")) -> list:
    """metrics.jsonl's lines, without the timing-dependent values (`drop`)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in f]
