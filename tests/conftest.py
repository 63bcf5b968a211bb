import importlib
import os

# Tests run on the CPU; keep TensorFlow's and XLA's logs quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# torch imports triton lazily (e.g. on the first optimizer step); loading triton's native
# library after TensorFlow's segfaults. The test session uses both, so load torch's side first.
for _module in ("torch", "triton"):
    try:
        importlib.import_module(_module)
    except ImportError:
        pass
