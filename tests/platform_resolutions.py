"""The platform resolutions of the install contract (tests/test_install.py): uv's resolver
for each (extra, platform), started at once in background threads. They wait on the package
registry, not the CPU, for about a minute: conftest.py starts them when the session collects
the test, so that the wait overlaps the rest of the suite. Imported as
`tests.platform_resolutions` by both, so that both see the same futures."""

import concurrent.futures
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (extra or None for the core, uv's --python-platform, what the resolution must hold)
RESOLUTIONS = {
    "train-linux-x86_64": ("train", "x86_64-unknown-linux-gnu",
                           ["tensorflow-cpu", "tensorflow-datasets", "array-record", "jax",
                            "onednn-cpu-gomp"]),
    "train-linux-aarch64": ("train", "aarch64-unknown-linux-gnu",
                            ["tensorflow", "tensorflow-datasets", "array-record", "jax"]),
    "train-macos-arm64": ("train", "aarch64-apple-darwin",
                          ["tensorflow", "tensorflow-datasets", "array-record", "jax"]),
    "cuda12-linux-x86_64": ("cuda12", "x86_64-unknown-linux-gnu",
                            ["jax-cuda12-plugin", "jaxlib"]),
    "cuda12-linux-aarch64": ("cuda12", "aarch64-unknown-linux-gnu",
                             ["jax-cuda12-plugin", "jaxlib"]),
    "tpu-linux-x86_64": ("tpu", "x86_64-manylinux_2_31", ["libtpu", "jaxlib"]),  # TPU VMs
    "core-macos-arm64": (None, "aarch64-apple-darwin", ["jax", "flax", "optax", "flatbuffers"]),
    "search-macos-arm64": ("search", "aarch64-apple-darwin", ["faiss-cpu"]),
    "search-linux-aarch64": ("search", "aarch64-unknown-linux-gnu", ["faiss-cpu"]),
    "tune-macos-arm64": ("tune", "aarch64-apple-darwin", ["optuna", "psycopg-binary", "cmaes"]),
    "tune-linux-aarch64": ("tune", "aarch64-unknown-linux-gnu",
                           ["optuna", "psycopg-binary", "cmaes"]),
    "serve-linux-x86_64": ("ray", "x86_64-unknown-linux-gnu",
                           ["fastapi", "uvicorn", "python-multipart", "prometheus-client",
                            "ray"]),
    "serve-linux-aarch64": ("ray", "aarch64-unknown-linux-gnu",
                            ["fastapi", "uvicorn", "python-multipart", "prometheus-client",
                             "ray"]),
    "serve-macos-arm64": ("ray", "aarch64-apple-darwin",
                          ["fastapi", "uvicorn", "python-multipart", "prometheus-client",
                           "ray"]),
}
# Built on Linux x86_64 only: absent by marker elsewhere (kernels="auto" uses the portable path).
ONEDNN = "onednn-cpu-gomp"

_RESOLVING: dict = {}  # key -> future, once started


def _compile(extra, target) -> subprocess.CompletedProcess:
    uv = shutil.which("uv") or os.path.join(os.path.dirname(sys.executable), "uv")
    command = [uv, "pip", "compile", os.path.join(ROOT, "pyproject.toml"), "--python-platform",
               target, "--python-version", "3.12", "--no-header", "-q"]
    return subprocess.run(command + (["--extra", extra] if extra else []), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def start_resolutions() -> dict:
    """{key: future of the CompletedProcess}; starts them on the first call."""
    if not _RESOLVING:
        pool = concurrent.futures.ThreadPoolExecutor(len(RESOLUTIONS))
        _RESOLVING.update({key: pool.submit(_compile, extra, target)
                           for key, (extra, target, _) in RESOLUTIONS.items()})
        pool.shutdown(wait=False)
    return _RESOLVING
