"""Your own images: a folder of class folders, ImageNet-style preprocessing, ResNet-50.

    python train.py --config configs/folder.py --workdir runs/mine \\
        --config.data_dir=DIR [--config.init_from=torchvision:resnet50]

DIR holds train/CLASS/*.jpg (JPEG, PNG, BMP or GIF) and val/CLASS/* (or validation/, test/;
without one, 20% of each class is held out). The defaults suit fine-tuning an ImageNet ResNet-50
on a few thousand images: 30 epochs, cosine schedule with one epoch of warm-up, batch 64,
learning rate 0.01, 224x224 crops, ImageNet's augmentation (random-resized crops of 8-100% of
the area, flips). Measured results on small offline image sets, and the settings for small or
not mirror-symmetric images (digits: crop_min_area=0.5, random_flip=False), are in the README,
"Your own images".
"""

from resnet_jax.configs import default


def get_config():
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
    return c
