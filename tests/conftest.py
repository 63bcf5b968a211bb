import os

# Tests run on the CPU; keep TensorFlow's and XLA's logs quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
