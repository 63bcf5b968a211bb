"""Your own images: a folder of class folders, ImageNet-style preprocessing; sized for a GPU
(the default) or for a CPU laptop (`:cpu`).

    python train.py --config configs/folder.py --workdir runs/mine \\
        --config.data_dir=DIR [--config.init_from=torchvision:resnet50]
    python train.py --config configs/folder.py:cpu --workdir runs/mine --config.data_dir=DIR

DIR holds train/CLASS/*.jpg (JPEG, PNG, BMP, GIF, WebP or TIFF) and val/CLASS/* (or
validation/, test/; without one, 20% of each class is held out). Every epoch is evaluated and
the best state kept in WORKDIR/best (what evaluate, predict and export use by default).

gpu (the default) suits fine-tuning an ImageNet ResNet-50 on a few thousand images on a GPU:
30 epochs, cosine schedule with one epoch of warm-up, batch 64, learning rate 0.01, 224x224
crops, ImageNet's augmentation (random-resized crops of 8-100% of the area, flips).
On a CPU it is slow and large: XLA estimates 5.1 GB for its training step alone, and a
2-core VM ran over a minute a step. cpu fine-tunes torchvision's ImageNet ResNet-18
(`torchvision:resnet18`, downloaded once) at 160x160 on a laptop's CPU: only its last stage
and the head train (trainable=layer4+head), batch 32, 10 epochs; its training step needs about
0.15 GB (XLA's estimate) and took about 1 s on a 2-core VM (2026-12-07). docs/own-images.md
has measured results and the settings for small or not mirror-symmetric images
(crop_min_area, random_flip).
"""

from resnet_jax.configs import default

SIZES = ("gpu", "cpu")


def get_config(size: str = "gpu"):
    if size not in SIZES:
        raise ValueError(f"configs/folder.py:{size}: the sizes are {', '.join(SIZES)} "
                         f"(configs/folder.py:cpu for a laptop's CPU)")
    c = default.get_config()
    c.model = "resnet50"
    c.dataset = "folder"
    c.image_size = 224
    c.eval_resize = 256
    c.batch_size = 64
    c.eval_batch_size = 64
    c.learning_rate = 0.01
    c.lr_scaling_batch_size = 0
    c.schedule = "cosine"
    c.warmup_epochs = 1.0
    c.weight_decay = 1e-4
    c.num_epochs = 30.0
    c.log_every_steps = 10
    c.eval_every_steps = -1
    c.eval_every_epochs = 1.0  # the best checkpoint is chosen among every epoch's evaluation
    c.checkpoint_every_steps = 200
    if size == "cpu":
        c.model = "resnet18"
        c.init_from = "torchvision:resnet18"
        c.trainable = "layer4+head"
        c.image_size = 160
        c.eval_resize = 183  # 160 / 0.875, as 224 / 256
        c.batch_size = 32
        c.eval_batch_size = 32
        c.num_epochs = 10.0
        c.learning_rate = 0.01
    return c
