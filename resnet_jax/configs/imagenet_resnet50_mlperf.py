"""ResNet-50 v1.5 with MLPerf Training's closed-division LARS recipe (quality target 75.9%
top-1), as its reference (mlcommons/training image_classification/tensorflow2:
lars_optimizer.py, lars_util.py) defines the optimizer and schedule:

    python train.py --config configs/imagenet_resnet50_mlperf.py --workdir runs/r50_mlperf

LARS (eeta 0.001, epsilon 0 -> Keras's 1e-7, momentum 0.9; batch norm and biases without
LARS or weight decay), polynomial warm-up and decay (power 2, end 1e-4), label smoothing 0.1.
The reference picks the base rate by batch: 10.0 with 5 warm-up epochs below 16,384, 25.0 with
5 from 16,384, 31.2 with 25 from 32,768; set learning_rate/warmup_epochs with batch_size.
Batch sizes: 3,264 = 8 GPUs x 408 (one node) or 16 TPU chips x 204 (v4-32 / v5p-32);
larger slices scale it up (e.g. 65,536 on 256 chips, with the 31.2 / 25-epoch setting).
Epochs and weight decay are tuned per submission within the rules; 37 epochs and 5e-5 are
typical at batch 3,264. Batch norm over the global batch (bn_group_size=0); MLPerf's GPU
submissions normalise per GPU or per group of GPUs: bn_group_size = examples per group.
"""

from resnet_jax.configs import imagenet_resnet50


def get_config():
    c = imagenet_resnet50.get_config()  # ResNet-50 v1.5 on imagenet2012, bf16; then:
    c.batch_size = 3_264
    c.eval_batch_size = 3_264
    c.optimizer = "lars"
    c.lars_eeta = 0.001
    c.lars_epsilon = 0.0
    c.momentum = 0.9
    c.weight_decay = 5e-5
    c.learning_rate = 10.0
    c.lr_scaling_batch_size = 0
    c.schedule = "polynomial"
    c.warmup_epochs = 5.0
    c.end_learning_rate = 1e-4
    c.poly_power = 2.0
    c.num_epochs = 37.0
    c.label_smoothing = 0.1
    c.eval_every_steps = 1_570     # 4 epochs
    c.checkpoint_every_steps = 1_570
    return c
