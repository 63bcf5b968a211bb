"""A user's mistake is one line and exit status 2; a bug in the package is a traceback."""

import subprocess
import sys

import pytest

from resnet_jax import errors
from resnet_jax.data import datasets
from resnet_jax.train import checkpoint, config
from tests.train_cli import REPO, cli_env


@pytest.mark.parametrize("kind", [config.ConfigError, datasets.DataError,
                                  checkpoint.CheckpointMismatch])
def test_user_errors_are_one_line_and_exit_2(kind, capsys):
    with pytest.raises(SystemExit) as exit_:
        with errors.reported():
            raise kind("batch_size=3 must be a positive multiple of 4")
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: batch_size=3 must be a positive multiple of 4\n"


def test_other_errors_pass_through():
    with pytest.raises(ValueError, match="a bug"):
        with errors.reported():
            raise ValueError("a bug")


def test_a_bug_while_training_is_a_traceback_not_exit_2(tmp_path):
    """train.py with a training loop that fails while tracing, as a shape bug would."""
    code = f"""
import runpy, sys
from resnet_jax.train import loop
def broken(config, workdir):
    import jax.numpy as jnp
    jnp.zeros((2, 3)) @ jnp.zeros((2, 3))  # a shape error, as in a buggy step
loop.train_and_evaluate = broken
sys.argv = ["train.py", "--config", "configs/digits.py", "--workdir", {str(tmp_path)!r}]
runpy.run_path("train.py", run_name="__main__")
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(1),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "Traceback (most recent call last)" in run.stderr
    assert "TypeError" in run.stderr and "error: " not in run.stderr.splitlines()[-1][:7]
