"""The embedded default: scikit-learn's handwritten digits, a CIFAR-style ResNet-20, offline.

    python train.py --config configs/digits.py --workdir runs/digits

1,797 real 8x8 grayscale images (10 classes); a fixed stratified split holds out 360 of them.
Expected: >= 98% top-1 on the held-out split in well under a minute on a 2-core CPU, compile
included (BENCHMARKS.md has the measured figure).
"""

from resnet_jax.configs import default


def get_config():
    c = default.get_config()
    c.model = "resnet20"
    c.dataset = "digits"
    c.image_size = 8
    c.batch_size = 64
    c.eval_batch_size = 128
    c.learning_rate = 0.1
    c.lr_scaling_batch_size = 0
    c.schedule = "cosine"
    c.warmup_epochs = 1.0
    c.weight_decay = 5e-4
    c.num_epochs = 30.0
    c.log_every_steps = 20
    c.checkpoint_every_steps = 200
    return c
