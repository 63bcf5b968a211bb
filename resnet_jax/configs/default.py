"""Every config key, with its default. Recipes import this and override a few fields.

Derived values (the learning rate from the batch size, steps from epochs) are computed in one
place, `resnet_jax.train`, never here.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    # Model: a name from resnet_jax.models.MODELS and its options.
    c.model = "resnet50"
    c.shortcut = "A"              # CIFAR family only: "A" zero-pad (paper), "B" projection
    c.zero_init_residual = False  # last BN scale of each residual branch starts at 0
    c.bn_momentum = 0.1           # torch's convention (weight of the new batch statistic)
    c.bn_epsilon = 1e-5
    c.bn_group_size = 0           # 0: batch-norm statistics over the global batch; N > 0: over
                                  # groups of N examples ("ghost" BN, like PyTorch DDP's per-GPU
                                  # statistics at N = per-GPU batch), whatever the device count
    c.kernels = "auto"            # who computes convs, batch norm, max pool: "auto" (the
                                  # fastest here: the CPU extension on one CPU device, XLA on
                                  # GPU/TPU; RESNET_JAX_KERNELS overrides it), "xla" (portable),
                                  # "patches", "native" (resnet_jax.cpu)
    c.drop_path_rate = 0.0        # stochastic depth (timm's drop_path_rate): block k of n
                                  # skips its residual branch with p = rate * k / (n - 1)
    c.dtype = "float32"           # float32 | bfloat16 (compute; float32 params and BN
                                  # statistics) | float64 (everything; a CPU reference run)

    # Data: digits | cifar10 | cifar100 | imagenet2012 | imagenette | fake | folder |
    # multilabel (DIR with the images and train.csv/val.csv: path,labels; several per image).
    c.dataset = "imagenet2012"
    c.data_dir = ""               # TFDS data dir ("": TFDS's default, ~/tensorflow_datasets);
                                  # folder: DIR with train/CLASS/* and val/CLASS/* images
    c.eval_split = ""             # the split evaluated ("": validation/test; a folder: the
                                  # first of val/, validation/, test/, else the held-out images)
    c.max_image_pixels = 178_956_970  # image files: larger ones (width x height) are refused
    c.skip_bad_images = False     # image files: leave out the unreadable ones (truncated,
                                  # not images, too large), counted, named on stderr and in
                                  # WORKDIR/skipped_images.txt; False: the first stops the run
    c.holdout_fraction = 0.2      # folder without val/: share of each class held out for eval
    c.threshold = 0.5             # multilabel: a label is predicted where its sigmoid >= this
    c.image_size = 224            # training crop / eval crop; CIFAR 32, digits 8
    c.eval_resize = 256           # ImageNet-style eval: resize shorter side, then center crop
    c.eval_crop_size = 0          # image files: the eval center crop (torchvision
                                  # --val-crop-size); 0: image_size
    c.crop_min_area = 0.08        # image files: random-resized crop of 8%..100% of the area
                                  # (ImageNet's); raise it for small or centred images
    c.random_flip = True          # image files: random horizontal flips (False for digits,
                                  # text, anything not mirror-symmetric)
    c.auto_augment = ""           # image pixels: "ta_wide" (TrivialAugmentWide) or
                                  # "rand_augment" (RandAugment), torchvision's ops
                                  # (--auto-augment ta_wide / ra), after crop and flip
    c.ra_num_ops = 2              # rand_augment: ops per image
    c.ra_magnitude = 9            # rand_augment: magnitude bin of 31 (--ra-magnitude)
    c.random_erasing = 0.0        # probability of torchvision's RandomErasing per example
                                  # (on the device, after normalisation)
    c.mixup_alpha = 0.0           # > 0: v2.MixUp(alpha) per batch (--mixup-alpha)
    c.cutmix_alpha = 0.0          # > 0: v2.CutMix(alpha) per batch (--cutmix-alpha); both on:
                                  # one of the two per batch, equally likely
    c.ra_reps = 1                 # > 1: repeated augmentation (torchvision --ra-sampler
                                  # --ra-reps): epochs of ~1/ra_reps of the images, each
                                  # ra_reps times, differently augmented
    c.fake_num_classes = 1000     # fake data only
    c.fake_num_examples = 1024    # fake data only: examples per "epoch"

    # Fine-tuning.
    c.init_from = ""              # start from weights: by name (torchvision:resnet50,
                                  # torchvision:resnet50.v1, hf-hub:OWNER/REPO, from the Hub),
                                  # a torchvision state dict (.pth, .pt, .safetensors) or a
                                  # workdir of this project; a head of another class count is
                                  # re-initialised
    c.freeze_backbone = False     # train only the classifier head (backbone weights and
                                  # batch-norm statistics fixed, batch norm in eval mode)
    c.head = "linear"             # the classifier: linear (torchvision's fc) | mlp (a hidden
                                  # Dense(head_hidden) + ReLU before it; no torchvision export)
    c.head_hidden = 512           # head="mlp": the hidden layer's width
    c.head_dropout = 0.0          # dropout right before the classifier (timm's drop_rate)
    c.trainable = "all"           # what training may change, '+'-joined: stem, layer1..layer4
                                  # (CIFAR nets: ..layer3), norm (every BN scale/bias), head;
                                  # frozen parts stay bitwise (resnet_jax/train/trainable.py)

    # Optimisation (torch.optim.SGD semantics: coupled weight decay, momentum on the gradient).
    c.batch_size = 256            # global batch, over all devices and processes
    c.eval_batch_size = 256
    c.grad_accumulation_steps = 1  # k > 1: each step runs batch_size/k examples at a time and
                                   # averages their gradients (one optimizer step, one schedule
                                   # step); for batches larger than memory
    c.learning_rate = 0.1         # at lr_scaling_batch_size; see lr_scaling_batch_size
    c.lr_scaling_batch_size = 256  # lr = learning_rate * batch_size / this; 0 disables scaling
    c.momentum = 0.9
    c.nesterov = False
    c.weight_decay = 1e-4
    c.decay_bn_and_bias = True    # torch applies weight decay to every parameter by default
    c.norm_weight_decay = -1.0    # batch-norm parameters (torchvision --norm-weight-decay);
                                  # < 0: as the rest (0 with decay_bn_and_bias=False)
    c.bias_weight_decay = -1.0    # the classifier's bias (--bias-weight-decay); < 0: likewise
    c.optimizer = "sgd"           # sgd (torch.optim.SGD) | lars (MLPerf's reference LARS) |
                                  # adamw (torch.optim.AdamW: decoupled weight decay; timm's
                                  # and Keras' fine-tuning default, with e.g. learning_rate
                                  # 1e-3 and weight_decay 0.05; momentum/nesterov unused)
    c.adam_beta1 = 0.9            # adamw's betas and epsilon (torch's defaults)
    c.adam_beta2 = 0.999
    c.adam_epsilon = 1e-8
    c.lars_eeta = 0.001           # LARS trust coefficient
    c.lars_epsilon = 0.0          # LARS epsilon (0: Keras's 1e-7, as MLPerf's reference)
    c.layer_decay = 1.0           # timm's --layer-decay: the head at the full rate, each block
                                  # below it at layer_decay^k of it, the stem lowest (1: off)
    c.grad_clip_norm = 0.0        # > 0: clip the global gradient norm (torch's
                                  # clip_grad_norm_, --clip-grad-norm)
    c.label_smoothing = 0.0
    c.class_weights = ""          # "balanced": each class's loss weighted by n_images /
                                  # (n_classes * its count), scikit-learn's "balanced", as
                                  # torch's CrossEntropyLoss(weight=...); for a skewed folder
    c.schedule = "cosine"         # cosine | piecewise | constant | polynomial (MLPerf's
                                  # warm-up then (1 - t)^poly_power decay to end_learning_rate)
    c.end_learning_rate = 1e-4    # polynomial only
    c.poly_power = 2.0            # polynomial only
    c.warmup_epochs = 0.0         # linear warm-up, in epochs (counted in steps)
    c.warmup_start_factor = 0.0   # the warm-up starts at this x the peak rate (torchvision
                                  # --lr-warmup-decay, 0.01 there)
    c.schedule_unit = "step"      # step | epoch: the rate changes every step, or once an
                                  # epoch as torchvision's reference steps its schedulers
    c.lr_boundaries_steps = ()    # piecewise: lr is multiplied by lr_decay_factor at each
    c.lr_boundaries_epochs = ()   # piecewise: the same, given in epochs
    c.lr_decay_factor = 0.1
    c.num_epochs = 90.0
    c.ema_decay = 0.0             # > 0: keep an EMA of weights and BN statistics, evaluated
                                  # and checkpointed (torchvision --model-ema-decay, e.g.
                                  # 0.99998, adjusted to batch, ema_steps and epochs as there)
    c.ema_steps = 32              # EMA update every N steps (--model-ema-steps)
    c.num_train_steps = -1        # > 0 overrides num_epochs

    # Loop.
    c.seed = 0
    c.log_every_steps = 100       # fetch metrics to the host, write metrics.jsonl
    c.eval_every_steps = -1       # -1: once, at the end; otherwise also every N steps
    c.eval_every_epochs = 0.0     # > 0: also every N epochs (rounded to steps), unless
                                  # eval_every_steps > 0, which takes precedence
    c.best_metric = "auto"        # at every evaluation the `best` checkpoint (WORKDIR/best)
                                  # keeps the state that scored best on: eval_top1 | eval_map
                                  # (multilabel) | eval_loss; auto: eval_top1, or eval_map for
                                  # multilabel (the names the search's --objective uses)
    c.early_stopping_patience = 0  # > 0: stop the run (exit 0, checkpointed, the reason in
                                   # WORKDIR/early_stopping.json) after this many evaluations
                                   # without an improvement of best_metric
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.stop_after_steps = -1       # > 0: end this invocation at that step (checkpointed), as
                                  # a preempted job would; running again continues the run
    c.progress_bar = True         # a bar on a terminal; without one (a log file), or with
                                  # False, a plain line every progress_interval_s instead
    c.progress_interval_s = 30.0
    c.compilation_cache_dir = "~/.cache/resnet_jax/xla"  # "" disables the persistent cache
    return c
