"""A user's mistake is one line and exit status 2; a bug in the package is a traceback; other
stops (signals, divergence, storage) have statuses of their own."""

import errno
import subprocess
import sys

import pytest

from resnet_jax import errors
from resnet_jax import plan as plans
from resnet_jax.data import datasets
from resnet_jax.runs import checkpoint
from tests.train_cli import REPO, cli_env


@pytest.mark.parametrize("kind", [plans.ConfigError, datasets.DataError,
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


@pytest.mark.parametrize("kind,status", [(errors.UserError, 2), (errors.Interrupted, 3),
                                         (errors.Diverged, 4), (errors.StorageError, 5)])
def test_each_kind_of_stop_has_its_own_exit_status(kind, status, capsys):
    with pytest.raises(SystemExit) as exit_:
        with errors.reported():
            raise kind("what happened")
    assert exit_.value.code == status
    assert capsys.readouterr().err == f"{kind.prefix}what happened\n"


@pytest.mark.parametrize("error", [
    RuntimeError("the save failed"),  # wrapping an OSError, as Orbax's threads do
    ValueError('RESOURCE_EXHAUSTED: Error writing local file "/w/checkpoints/12/x": Failed to '
               "write 14463 bytes to file 5: No space left on device [os_error_code='28']"),
])
def test_a_full_disk_is_a_storage_error_wherever_it_surfaces(error, capsys):
    with pytest.raises(SystemExit) as exit_:
        with errors.reported():
            try:
                raise OSError(errno.ENOSPC, "No space left on device", "/w/metrics.jsonl")
            except OSError as cause:
                raise error from cause
    assert exit_.value.code == errors.StorageError.exit_status
    line = capsys.readouterr().err
    assert line.startswith("error: No space left on device: /w/") and line.count("\n") == 1
    assert "free some space and run the same command to continue" in line


def test_weights_a_user_passes_are_checked_in_one_line():
    torch = pytest.importorskip("torch")
    from resnet_jax.interop import torchvision_weights as tw

    state_dict = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}
    with pytest.raises(errors.UserError, match=r"not a state dict of tensors: \[bn1.weight "
                                               r"\(str\)\] are not tensors or arrays"):
        tw.from_torchvision("resnet18", {**state_dict, "bn1.weight": "abc"})
    with pytest.raises(errors.UserError, match="num_classes must be >= 1, got 0"):
        tw.from_torchvision("resnet18", {**state_dict, "fc.weight": torch.zeros(0, 512)})
    with pytest.raises(errors.UserError, match="variables for resnet18 lack 'params' and "
                                               "'batch_stats'"):
        tw.to_torchvision("resnet18", {})
