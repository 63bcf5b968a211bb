import importlib
import os

import pytest

# Tests run on the CPU; keep TensorFlow's and XLA's logs quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Two simulated CPU devices, so that sharded steps, batch-norm groups and the data-parallel
# maths run in-process; tests that need another count start a subprocess (tests/train_cli.py).
# Not more than the 2 cores of the machines this runs on: XLA:CPU runs the collectives of all
# simulated devices on one thread pool of the core count, and with 4 devices on 2 loaded cores
# a training step deadlocked in an all-reduce (2 of 14 runs aborted by XLA's 40 s limit; with
# that limit raised to 600 s a run hung for minutes; 0 of 14 with 2 devices).
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=2").strip()

# torch imports triton lazily (e.g. on the first optimizer step); loading triton's native
# library after TensorFlow's segfaults. The test session uses both, so load torch's side first.
for _module in ("torch", "triton"):
    try:
        importlib.import_module(_module)
    except ImportError:
        pass


# Modules that train, run the command-line tools or install packages: `make test-fast` (the
# inner loop, `-m "not slow and not e2e"`) leaves them to `make test`.
END_TO_END = {"test_own_images", "test_faults", "test_launch", "test_experiments",
              "test_recipes", "test_train_loop", "test_run_records", "test_install", "test_docs",
              "test_refusals", "test_tools", "test_fine_tuning", "test_errors", "test_bench",
              "test_folders", "test_cpu_build", "test_search", "test_multilabel",
              "test_pretrained", "test_best", "test_serve", "test_journeys", "test_search_faults",
              "test_stress", "test_host_memory", "test_environment"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rpartition(".")[2] in END_TO_END:
            item.add_marker(pytest.mark.e2e)


def pytest_collection_finish(session):
    """The platform resolutions wait on the package registry for about a minute: start them
    now, so that they run while the other tests use the CPU."""
    if any(item.name.startswith("test_every_platform_resolves") for item in session.items):
        from tests import platform_resolutions
        platform_resolutions.start_resolutions()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One persistent XLA compilation cache for the session's training runs."""
    return str(tmp_path_factory.mktemp("xla_cache"))


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, cache_dir):
    """The small digits run (tests/digits_runs.py), trained once, in-process on 2 devices."""
    from resnet_jax.train import loop
    from tests.digits_runs import small_digits_config

    workdir = str(tmp_path_factory.mktemp("digits"))
    result = loop.train_and_evaluate(small_digits_config(cache_dir), workdir)
    return workdir, result
