"""ResNet-50 v1.5 on ImageNet (TFDS imagenet2012), large-batch recipe, bf16 compute.

    python train.py --config configs/imagenet_resnet50.py --workdir runs/imagenet_resnet50

Data: TFDS cannot download ImageNet. Put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in
~/tensorflow_datasets/downloads/manual/ (or DATA_DIR/downloads/manual with --config.data_dir),
then run `python -m resnet_jax.data.prepare imagenet2012` once (ArrayRecord files, read by index).
Recipe: lr 0.1 x batch/256, 5-epoch linear warm-up, cosine decay, 90 epochs, momentum 0.9,
weight decay 1e-4 (5e-5 is also common with label smoothing), inception-style random-resized
crop + flip, eval resize 256 / center crop 224. Expected: ~76.5-77% top-1 (torchvision's v1
weights, 76.13%, came from a step schedule without label smoothing).
"""

from resnet_jax.configs import default


def get_config():
    c = default.get_config()
    c.model = "resnet50"
    c.dataset = "imagenet2012"
    c.image_size = 224
    c.eval_resize = 256
    c.batch_size = 1024
    c.eval_batch_size = 1024
    c.learning_rate = 0.1
    c.lr_scaling_batch_size = 256
    c.schedule = "cosine"
    c.warmup_epochs = 5.0
    c.num_epochs = 90.0
    c.label_smoothing = 0.1
    c.dtype = "bfloat16"
    c.log_every_steps = 100
    c.eval_every_steps = 5_000
    c.checkpoint_every_steps = 5_000
    return c
