"""Knowing the hardware: attached accelerators read from sysfs, the warning where JAX cannot see
them, the devices line every command prints, `python -m resnet_jax.info`, and the CPU kernels
on a platform without the extension."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from resnet_jax import environment, extras
from resnet_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pci_device(root, address, vendor, device, pci_class):
    path = root / "sys" / "bus" / "pci" / "devices" / address
    path.mkdir(parents=True)
    for name, value in (("vendor", vendor), ("device", device), ("class", pci_class)):
        (path / name).write_text(value + "\n")


def test_attached_accelerators_are_read_from_the_pci_bus(tmp_path):
    assert environment.accelerators_present(str(tmp_path)) == {"gpu": 0, "tpu": 0}
    for i in range(2):  # two NVIDIA 3D controllers, an NVIDIA audio function, a NIC
        _pci_device(tmp_path, f"0000:0{i}:00.0", "0x10de", "0x2335", "0x030200")
    _pci_device(tmp_path, "0000:02:00.1", "0x10de", "0x22a3", "0x040300")
    _pci_device(tmp_path, "0000:03:00.0", "0x8086", "0x1572", "0x020000")
    assert environment.accelerators_present(str(tmp_path)) == {"gpu": 2, "tpu": 0}


def test_tpu_chips_are_told_from_other_google_devices(tmp_path):
    for i, device in enumerate(("0x005e", "0x005e", "0x0062", "0x0063")):  # v4, v4, v5p, v5e
        _pci_device(tmp_path, f"0000:0{i}:04.0", "0x1ae0", device, "0x120000")
    _pci_device(tmp_path, "0000:09:00.0", "0x1ae0", "0x0042", "0x020000")  # gVNIC
    assert environment.accelerators_present(str(tmp_path)) == {"gpu": 0, "tpu": 4}


def test_the_nvidia_driver_files_count_where_sysfs_shows_nothing(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "nvidiactl").write_text("")  # a container with the driver mounted
    assert environment.accelerators_present(str(tmp_path))["gpu"] == 1


def test_a_missing_runtime_names_the_extra():
    gpu = environment.missing_runtime("cpu", {"gpu": 8, "tpu": 0})
    assert "pip install 'flax-resnets[cuda12]'" in gpu and "8 found" in gpu
    tpu = environment.missing_runtime("cpu", {"gpu": 0, "tpu": 4})
    assert "pip install 'flax-resnets[tpu]'" in tpu
    assert environment.missing_runtime("gpu", {"gpu": 8, "tpu": 0}) is None
    assert environment.missing_runtime("cpu", {"gpu": 0, "tpu": 0}) is None


def test_the_devices_line_names_devices_jax_and_kernels():
    line = environment.devices_line("xla")
    count = len(jax.devices())
    assert line.startswith(f"devices: {count} x cpu (")
    assert f", jax {jax.__version__}, kernels xla" in line


def test_require_extra_is_one_line_naming_the_extra():
    extras.require_extra("train", "training")  # the test environment has it
    extras.EXTRA_MODULES["nothing"] = ("a_module_that_is_not_installed",)
    try:
        with pytest.raises(UserError, match=r"^sweeping needs the nothing extra: pip install "
                                            r"'flax-resnets\[nothing\]' \(not installed here: "
                                            r"a_module_that_is_not_installed\)$"):
            extras.require_extra("nothing", "sweeping")
    finally:
        del extras.EXTRA_MODULES["nothing"]


def test_info_prints_versions_devices_and_kernels():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run([sys.executable, "-m", "resnet_jax.info"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    for prefix in ("python 3.", f"jax {jax.__version__}", "jaxlib ", "flax ", "optax ",
                   "orbax-checkpoint ", "tensorflow ", "torch ", "devices: 1 x cpu (",
                   "kernels=auto resolves to: ", "CPU extension: "):
        assert any(line.startswith(prefix) for line in lines), (prefix, result.stdout)
    listed = next(line for line in lines if line.startswith("extras importable: "))
    listed = listed.partition(": ")[2].split(", ")
    assert "train" in listed  # the test session's, and torch's where it has PyTorch
    has_torch = importlib.util.find_spec("torch") is not None
    assert ("torch" in listed, "export" in listed) == (has_torch, has_torch), listed


def test_auto_uses_the_portable_kernels_where_the_extension_is_not_built():
    """macOS arm64 and Linux aarch64 (no oneDNN wheel): "auto" is "patches", without a
    warning (it is the plan there, not a fault), and the reason names the platform."""
    script = textwrap.dedent("""
        import warnings
        warnings.simplefilter("error")
        from resnet_jax.cpu import extension
        extension.SUPPORTED_PLATFORM = False  # as on macOS arm64, before anything loads it
        from resnet_jax.models import kernels
        assert kernels.resolve("auto", "float32").name == "patches"
        print(extension.unavailable_reason())
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "RESNET_JAX_KERNELS")}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "built on Linux x86_64 only" in result.stdout


def test_the_install_command_names_our_distribution_or_the_clone(monkeypatch):
    import importlib.metadata
    import tomllib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        assert tomllib.load(f)["project"]["name"] == extras.DISTRIBUTION
    assert extras.install_command("train,serve") == "pip install 'flax-resnets[train,serve]'"

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    # run from a clone that was never installed: pip would look for the name on the index
    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    assert extras.install_command("train") == f"pip install -e '{root}[train]'"
