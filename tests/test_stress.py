"""Image reading under load: the evaluation's decoding and resizing (what evaluate, predict,
embed and the service run from thread pools) is safe to run concurrently on a busy machine, and
never enters TensorFlow's eager ops (whose use from Python threads crashed embed.py with a
segmentation fault in 3 of 20 runs on a loaded 2-core machine)."""

import os
import subprocess
import sys

import pytest

from tests.train_cli import REPO

READER = """
import concurrent.futures, sys
import numpy as np
from resnet_jax.data import folders

paths = sys.argv[1:]
def round_():
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return [pixels.tobytes() for pixels in
                pool.map(lambda p: folders.read_eval_image(p, 48, 56), paths)]
first = round_()
for _ in range(19):
    assert round_() == first, "a concurrent read gave other pixels"
loaded = {"tensorflow", "tensorflow_datasets"} & set(sys.modules)
assert not loaded, f"the evaluation's reading imported {loaded}"
print("ok", len(first))
"""


@pytest.mark.slow
def test_twenty_rounds_of_threaded_image_reading_on_a_busy_machine(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(120):
        size = (int(rng.integers(40, 200)), int(rng.integers(40, 200)))
        path = str(tmp_path / f"{i}.{('jpg', 'png', 'webp')[i % 3]}")
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)).save(path)
        paths.append(path)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(os.cpu_count() or 2)]  # every core busy meanwhile
    try:
        proc = subprocess.run([sys.executable, "-c", READER, *paths], cwd=REPO,
                              capture_output=True, text=True, timeout=600)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert proc.returncode == 0, proc.stderr[-3000:]  # a crash: -11 (SIGSEGV)
    assert proc.stdout.split() == ["ok", "120"]
