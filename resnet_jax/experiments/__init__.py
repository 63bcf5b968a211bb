"""Experiments as commands: `sweep` (a grid or random sample of configs, one training per
sub-workdir, a results table and a figure) and `degradation` (the paper's plain vs residual
comparison at growing depth, Fig. 6)."""
