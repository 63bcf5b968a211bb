"""CIFAR-10 with the paper's recipe (He et al. 2015, section 4.2). Other depths: --config.model.

    python train.py --config configs/cifar10_resnet20.py --workdir runs/cifar10_resnet20
    python train.py --config configs/cifar10_resnet20.py --config.model=resnet110 --workdir ...

Batch 128, lr 0.1 divided by 10 at 32k and 48k iterations, 64k iterations, momentum 0.9, weight
decay 1e-4, 4-pixel pad + 32x32 random crop + horizontal flip, per-channel normalisation.
Expected test error (paper, Table 6): resnet20 8.75%, resnet32 7.51%, resnet44 7.17%,
resnet56 6.97%, resnet110 6.43% (best of 5). Prepare CIFAR-10 once:
`python -m resnet_jax.data.prepare cifar10`.
"""

from resnet_jax.configs import default


def get_config():
    c = default.get_config()
    c.model = "resnet20"
    c.dataset = "cifar10"
    c.image_size = 32
    c.batch_size = 128
    c.eval_batch_size = 1000
    c.learning_rate = 0.1
    c.lr_scaling_batch_size = 0
    c.schedule = "piecewise"
    c.lr_boundaries_steps = (32_000, 48_000)
    c.num_train_steps = 64_000
    c.weight_decay = 1e-4
    c.log_every_steps = 200
    c.eval_every_steps = 4_000
    c.checkpoint_every_steps = 4_000
    return c
