"""Benchmarks: the training step of JAX against PyTorch (`train_step`, also `python -m
resnet_jax.bench`), and the input pipeline (`input_pipeline`)."""
