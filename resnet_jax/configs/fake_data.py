"""Synthetic images of any shape: smoke tests and benchmarks, no data needed.

    python train.py --config configs/fake_data.py --workdir /tmp/fake \\
        --config.model=resnet18 --config.image_size=64 --config.num_train_steps=20

Expected: runs; the loss means nothing (random labels).
"""

from resnet_jax.configs import default


def get_config():
    c = default.get_config()
    c.model = "resnet18"
    c.dataset = "fake"
    c.image_size = 64
    c.fake_num_classes = 10
    c.fake_num_examples = 1024
    c.batch_size = 64
    c.eval_batch_size = 64
    c.num_train_steps = 20
    c.schedule = "constant"
    c.log_every_steps = 10
    c.checkpoint_every_steps = 10
    return c
