"""ResNet-50 with torchvision's recipe for `ResNet50_Weights.IMAGENET1K_V2` (80.858% top-1),
"How to train state-of-the-art models using TorchVision's latest primitives":

    torchrun --nproc_per_node=8 train.py --model resnet50 --batch-size 128 --lr 0.5 \\
      --lr-scheduler cosineannealinglr --lr-warmup-epochs 5 --lr-warmup-method linear \\
      --auto-augment ta_wide --epochs 600 --random-erase 0.1 --weight-decay 0.00002 \\
      --norm-weight-decay 0.0 --label-smoothing 0.1 --mixup-alpha 0.2 --cutmix-alpha 1.0 \\
      --train-crop-size 176 --model-ema --val-resize-size 232 --ra-sampler --ra-reps 4

    python train.py --config configs/imagenet_resnet50_tv_v2.py --workdir runs/r50_tv_v2

docs/recipes.md maps each flag to a key.
"""

from resnet_jax.configs import imagenet_resnet50


def get_config():
    c = imagenet_resnet50.get_config()  # ResNet-50 v1.5 on imagenet2012, bf16; then:
    c.batch_size = 1024            # 8 GPUs x --batch-size 128
    c.eval_batch_size = 1024
    c.learning_rate = 0.5          # --lr 0.5, not scaled with the batch
    c.lr_scaling_batch_size = 0
    c.schedule = "cosine"          # --lr-scheduler cosineannealinglr
    c.warmup_epochs = 5.0          # --lr-warmup-epochs 5 --lr-warmup-method linear
    c.warmup_start_factor = 0.01   # --lr-warmup-decay default
    c.schedule_unit = "epoch"      # its schedulers step once an epoch
    c.num_epochs = 600.0           # --epochs 600
    c.auto_augment = "ta_wide"     # --auto-augment ta_wide
    c.random_erasing = 0.1         # --random-erase 0.1
    c.weight_decay = 2e-5          # --weight-decay 0.00002
    c.norm_weight_decay = 0.0      # --norm-weight-decay 0.0
    c.label_smoothing = 0.1        # --label-smoothing 0.1
    c.mixup_alpha = 0.2            # --mixup-alpha 0.2
    c.cutmix_alpha = 1.0           # --cutmix-alpha 1.0
    c.image_size = 176             # --train-crop-size 176
    c.eval_resize = 232            # --val-resize-size 232
    c.eval_crop_size = 224         # --val-crop-size default
    c.ema_decay = 0.99998          # --model-ema (its default --model-ema-decay)
    c.ema_steps = 32               # --model-ema-steps default
    c.ra_reps = 4                  # --ra-sampler --ra-reps 4
    c.eval_every_steps = 12_510    # 10 epochs
    return c
