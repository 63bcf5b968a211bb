"""What this environment is: the devices JAX sees, the hardware it may be missing, the
installed versions, and which of the package's extras are here (`report()` is what
`python -m resnet_jax.info` prints).

Every command prints `devices_line()` before it compiles, and `missing_runtime()` as a warning
where the machine has an NVIDIA GPU or a TPU that JAX cannot see (JAX's CPU-only wheel was
installed without the `[cuda12]` / `[tpu]` extra). Which extras are installed:
`resnet_jax.extras`, a leaf the lower packages use. Imports nothing heavy: versions come from
package metadata.
"""

from __future__ import annotations

import collections
import importlib.metadata
import importlib.util
import os
import pathlib
import platform
import sys

from resnet_jax import extras
from resnet_jax.extras import EXTRA_MODULES, importable

# What the report lists, in order: (distribution names tried, label)
_PACKAGES = (
    (("jax",), "jax"), (("jaxlib",), "jaxlib"), (("flax",), "flax"), (("optax",), "optax"),
    (("orbax-checkpoint",), "orbax-checkpoint"), (("chex",), "chex"),
    (("numpy",), "numpy"), (("ml-collections",), "ml-collections"),
    (("jax-cuda12-plugin",), "jax-cuda12-plugin"), (("jax-cuda13-plugin",), "jax-cuda13-plugin"),
    (("libtpu", "libtpu-nightly"), "libtpu"),
    (("tensorflow-cpu", "tensorflow", "tensorflow-macos"), "tensorflow"),
    (("tensorflow-datasets",), "tensorflow-datasets"), (("array-record",), "array-record"),
    (("scikit-learn",), "scikit-learn"), (("matplotlib",), "matplotlib"),
    (("onednn-cpu-gomp",), "onednn-cpu-gomp"),
    (("torch",), "torch"), (("torchvision",), "torchvision"),
    (("onnx",), "onnx"), (("onnxruntime",), "onnxruntime"),
)
_NVIDIA_VENDOR, _GOOGLE_VENDOR = "0x10de", "0x1ae0"
# PCI device ids of Google's TPU chips (v2/v3, v4, v5p, v5e, v6e, TPU7x)
_TPU_DEVICE_IDS = {"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"}
_NVIDIA_DEVICE_FILES = ("dev/nvidia0", "dev/nvidiactl", "dev/dxg")  # dxg: WSL2


def version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def accelerators_present(root: str = "/") -> dict[str, int]:
    """Accelerators attached to this machine, whatever JAX sees: {"gpu": NVIDIA GPUs found on
    the PCI bus (or 1 where only the driver's device files show one), "tpu": TPU chips}."""
    found = collections.Counter()
    for device in sorted(pathlib.Path(root, "sys/bus/pci/devices").glob("*")):
        vendor, device_id, pci_class = (_read(device / name) for name in
                                        ("vendor", "device", "class"))
        if vendor == _NVIDIA_VENDOR and pci_class.startswith("0x03"):  # display / 3D
            found["gpu"] += 1
        elif vendor == _GOOGLE_VENDOR and device_id in _TPU_DEVICE_IDS:
            found["tpu"] += 1
    if not found["gpu"] and any(pathlib.Path(root, f).exists() for f in _NVIDIA_DEVICE_FILES):
        found["gpu"] = 1
    return {kind: found[kind] for kind in ("gpu", "tpu")}


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text().strip().lower()
    except OSError:
        return ""


def missing_runtime(backend: str, present: dict[str, int]) -> str | None:
    """A warning where the machine has an accelerator that JAX (on `backend`) does not use."""
    if backend != "cpu":
        return None
    if present.get("gpu"):
        return (f"an NVIDIA GPU is attached ({present['gpu']} found) but JAX sees only the "
                f"CPU: install JAX's CUDA runtime, {extras.install_command('cuda12')} (or "
                "[cuda13] for CUDA 13 drivers); python -m resnet_jax.info says what is installed")
    if present.get("tpu"):
        return (f"a TPU is attached ({present['tpu']} chips found) but JAX sees only the CPU: "
                f"install JAX's TPU runtime, {extras.install_command('tpu')}")
    return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("model name", "Model", "Hardware")):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def devices_line(kernels: str | None = None, dtype="float32") -> str:
    """One line naming what this process computes on, e.g. `devices: 8 x NVIDIA H100 80GB HBM3
    (gpu), jax 0.10.2, kernels xla`. Initialises JAX's backends: call it after
    `jax.distributed.initialize`."""
    import jax

    devices = jax.devices()
    backend = devices[0].platform
    if backend == "cpu":
        what = f"{len(devices)} x cpu ({cpu_name()}, {os.cpu_count()} cores)"
    else:
        kinds = collections.Counter(device.device_kind for device in devices)
        what = " + ".join(f"{count} x {kind}" for kind, count in kinds.items()) + f" ({backend})"
    line = f"devices: {what}, jax {jax.__version__}"
    if jax.process_count() > 1:
        line += f", {jax.process_count()} processes"
    if kernels is not None:
        from resnet_jax.models import kernels as seam
        line += f", kernels {seam.resolve(kernels, dtype).name}"
    return line


def announce(kernels: str | None = None, dtype="float32", file=None) -> None:
    """Prints `devices_line` (process 0 only; on stdout unless `file`) and, on stderr, a
    missing-runtime warning."""
    import jax

    if jax.process_index() != 0:
        return
    print(devices_line(kernels, dtype), file=file or sys.stdout, flush=True)
    warning = missing_runtime(jax.default_backend(), accelerators_present())
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def _kernels_report() -> list[str]:
    from resnet_jax.models import kernels as seam

    setting = os.environ.get(seam.ENVIRONMENT_VARIABLE, "")
    lines = [f"kernels=auto resolves to: {seam.resolve('auto', 'float32').name} "
             f"(float32), {seam.resolve('auto', 'bfloat16').name} (bfloat16)"
             + (f"; {seam.ENVIRONMENT_VARIABLE}={setting}" if setting else "")]
    if setting == "xla":
        lines.append(f"CPU extension: not loaded ({seam.ENVIRONMENT_VARIABLE}=xla)")
        return lines
    from resnet_jax.cpu import extension
    reason = extension.unavailable_reason()  # builds it on first use (~10 s), then cached
    lines.append("CPU extension: " + ("built and loaded" if reason is None
                                      else f"unavailable: {reason}"))
    return lines


def report() -> str:
    """The environment a bug report needs, as text."""
    installed = version(extras.DISTRIBUTION) or "(not installed: run from a checkout)"
    lines = [f"resnet-jax ({extras.DISTRIBUTION}) {installed}",
             f"python {platform.python_version()} ({sys.executable})",
             f"platform {platform.platform()} ({platform.machine()})"]
    lines += [f"{label} {version(*names) or '-'}" for names, label in _PACKAGES]
    importable_extras = [extra for extra, modules in EXTRA_MODULES.items()
                         if all(importable(name) for name in modules)]
    lines.append(f"extras importable: {', '.join(importable_extras) or 'none (core only)'}")
    import jax

    lines.append(devices_line())
    lines.append(f"jax backend {jax.default_backend()}, {jax.process_count()} process(es), "
                 f"{jax.local_device_count()} local device(s)")
    present = accelerators_present()
    lines.append(f"attached accelerators: {present['gpu']} NVIDIA GPU(s), "
                 f"{present['tpu']} TPU chip(s)")
    warning = missing_runtime(jax.default_backend(), present)
    if warning:
        lines.append(f"warning: {warning}")
    lines += _kernels_report()
    return "\n".join(lines)


def main() -> None:
    print(report(), flush=True)


if __name__ == "__main__":
    main()
