"""A run that would not fit the host's memory stops before its first step, in one line."""

import types

import pytest

from resnet_jax import errors
from resnet_jax import plan as plans
from resnet_jax.configs import folder
from resnet_jax.train import memory


def _compiled(temp_gb: float):
    stats = types.SimpleNamespace(temp_size_in_bytes=int(temp_gb * 2**30),
                                  argument_size_in_bytes=2**28)
    return types.SimpleNamespace(memory_analysis=lambda: stats)


def test_a_step_larger_than_the_free_memory_is_refused_naming_what_to_change(monkeypatch):
    monkeypatch.delenv("RESNET_JAX_SKIP_MEMORY_CHECK", raising=False)
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 8 * 2**30)  # an 8 GB laptop
    plan = plans.build(folder.get_config())  # resnet50, 224 px, batch 64
    with pytest.raises(errors.UserError) as refused:
        memory.check_host_memory(plan, _compiled(11.0))
    message = str(refused.value)
    assert message.startswith("the training step needs about 11.2 GB of host memory and 8.0 GB "
                              "are free: resnet50, batch_size=64")
    assert "image_size=224" in message and "configs/folder.py:cpu" in message
    memory.check_host_memory(plan, _compiled(5.0))  # fits, with the headroom: no error
    monkeypatch.setenv("RESNET_JAX_SKIP_MEMORY_CHECK", "1")
    memory.check_host_memory(plan, _compiled(11.0))  # asked to run anyway


def test_the_free_memory_is_read_from_the_kernel():
    free = memory.available_host_bytes()
    assert free is None or free > 2**20
