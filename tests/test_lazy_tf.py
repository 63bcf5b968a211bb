"""TensorFlow is imported on first use, not with the package: train.py's bad-config errors come
at once (2.6 s instead of 13.6 s on the 2-core machine), before TensorFlow's ~8 s import. (That
`tf` and `tfds` work once used, every input-pipeline test shows.)"""

import subprocess
import sys

import pytest


def test_training_modules_import_no_tensorflow():
    code = ("import sys, resnet_jax.train.loop, resnet_jax.train.metrics, "
            "resnet_jax.bench.input_pipeline, resnet_jax.data.datasets; "
            "loaded = {'tensorflow', 'tensorflow_datasets'} & set(sys.modules); "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)


QUIET_COMMAND = """
import sys
from absl import flags, logging
import jax  # sets TF_CPP_MIN_LOG_LEVEL=1 where nothing had, as in every command
from resnet_jax.cli import flags as cli
flags.FLAGS(["command", *sys.argv[1:]])
cli.quiet_logs()
from resnet_jax.data.lazy_tf import tf
files = tf.data.Dataset.from_tensor_slices(["/nonexistent/vanished.jpg"]).map(tf.io.read_file)
try:
    list(files)
except tf.errors.NotFoundError:
    print("error: our one line", file=sys.stderr)
"""


@pytest.mark.e2e  # two TensorFlow imports: ~25 s, more than the inner loop can spare
def test_tensorflows_cpp_warnings_stay_quiet_until_our_line_unless_asked():
    """An image that vanished mid-run: TensorFlow's C++ side logs the failed read twice
    (OP_REQUIRES ..., Local rendezvous ...) before our error; a command keeps them out unless
    --verbosity asks for logs."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

    def stderr(*args):
        return subprocess.run([sys.executable, "-c", QUIET_COMMAND, *args], env=env,
                              capture_output=True, text=True, check=True).stderr

    assert stderr().strip().splitlines() == ["error: our one line"]
    assert "OP_REQUIRES failed" in stderr("--verbosity=0")  # the test can see them
