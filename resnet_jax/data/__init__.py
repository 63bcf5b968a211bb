"""Datasets and input pipelines: host-local numpy batches for the training loop.

`datasets`: the sources (digits, fake, CIFAR-10/100, ImageNet, Imagenette) and their contract;
`preprocessing`: per-example transforms; `batching`: global batches, process shares, eval masks;
`lazy_tf`: TensorFlow, imported on first use and kept off the accelerators.
"""
