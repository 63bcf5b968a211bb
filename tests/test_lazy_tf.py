"""TensorFlow is imported on first use, not with the package: train.py's bad-config errors come
at once (2.6 s instead of 13.6 s on the 2-core machine), before TensorFlow's ~8 s import. (That
`tf` and `tfds` work once used, every input-pipeline test shows.)"""

import subprocess
import sys


def test_training_modules_import_no_tensorflow():
    code = ("import sys, resnet_jax.train.loop, resnet_jax.train.metrics, "
            "resnet_jax.bench.input_pipeline, resnet_jax.data.datasets; "
            "loaded = {'tensorflow', 'tensorflow_datasets'} & set(sys.modules); "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)
