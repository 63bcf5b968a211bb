"""The specs a plan holds: one small frozen dataclass per package that runs a part of the work.
Each is built from the flat config once (`resnet_jax.plan.build`), with the facts derived from
several keys computed there, and nowhere else."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from resnet_jax import models, tasks

# config.dtype -> (compute dtype, parameter dtype). Batch-norm statistics follow the params.
DTYPES = {"float32": (jnp.float32, jnp.float32), "bfloat16": (jnp.bfloat16, jnp.float32),
          "float64": (jnp.float64, jnp.float64)}
OPTIMIZERS = ("sgd", "lars", "adamw")
SCHEDULES = ("constant", "cosine", "piecewise", "polynomial")
SCHEDULE_UNITS = ("step", "epoch")
# best_metric -> (the evaluation's value, whether higher is better)
BEST_METRICS = {"eval_top1": ("top1", True), "eval_map": ("map", True),
                "eval_loss": ("loss", False)}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The network: `create(num_classes, in_channels)` builds it (the data says both)."""

    name: str
    kernels: str = "auto"
    dtype: str = "float32"
    shortcut: str | None = None  # CIFAR residual nets: "A" or "B"; None: the model's own
    zero_init_residual: bool = False
    bn_momentum: float = 0.1
    bn_epsilon: float = 1e-5
    bn_group_size: int = 0  # 0: statistics over the global batch
    drop_path_rate: float = 0.0
    eval_mode_norms: tuple[str, ...] = ()  # the frozen stem and stages (`trainable`)
    head: str = "linear"
    head_hidden: int = 512
    head_dropout: float = 0.0

    def create(self, num_classes: int, in_channels: int = 3) -> models.ResNet:
        compute, params = DTYPES[self.dtype]
        options = dict(in_channels=in_channels, zero_init_residual=self.zero_init_residual,
                       bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
                       bn_group_size=self.bn_group_size or None, kernels=self.kernels,
                       drop_path_rate=self.drop_path_rate, dtype=compute, param_dtype=params,
                       eval_mode_norms=self.eval_mode_norms, head=self.head,
                       head_hidden=self.head_hidden, head_dropout=self.head_dropout)
        if self.shortcut is not None:
            options["shortcut"] = self.shortcut
        return models.create_model(self.name, num_classes=num_classes, **options)


@dataclasses.dataclass(frozen=True)
class WeightDecays:
    """torchvision's parameter groups: conv and dense kernels, batch-norm scales and biases,
    the classifier's bias."""

    weight: float = 0.0
    norm: float = 0.0
    bias: float = 0.0

    def of(self, kind: str) -> float:
        return getattr(self, kind)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    name: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decays: WeightDecays = WeightDecays()
    lars_eeta: float = 0.001
    lars_epsilon: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-8
    grad_clip_norm: float = 0.0  # 0: no clipping
    layer_decay: float = 1.0     # 1: every layer at the full rate
    trainable: frozenset[str] | None = None  # the parts that train; None: all


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    name: str = "cosine"
    peak: float = 0.1  # the learning rate after warm-up (scaled with the batch if asked)
    unit: str = "step"
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.0
    boundaries_steps: tuple[int, ...] = ()
    boundaries_epochs: tuple[float, ...] = ()
    decay_factor: float = 0.1
    end_learning_rate: float = 1e-4
    poly_power: float = 2.0


@dataclasses.dataclass(frozen=True)
class BatchAugment:
    """Augmentations of a whole batch inside the step (`resnet_jax.train.batch_augment`)."""

    seed: int
    random_erasing: float = 0.0  # probability per example
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.random_erasing or self.mixup_alpha or self.cutmix_alpha)


@dataclasses.dataclass(frozen=True)
class EmaSpec:
    """torchvision's --model-ema-decay / --model-ema-steps, before their adjustment to the run's
    length (`resnet_jax.train.ema.EmaConfig`)."""

    decay: float
    every_steps: int
    warmup_epochs: int


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """What one training step computes besides the model: its task (targets, loss, metric
    sums), micro-batches, randomness and batch augmentations."""

    task: tasks.Task = tasks.Classification()
    accumulation_steps: int = 1
    dropout_seed: int | None = None  # the "dropout" rng's seed; None: the model draws none
    augment: BatchAugment | None = None


@dataclasses.dataclass(frozen=True)
class Lengths:
    """A run's length in the schedule's units, once the training set's size is known."""

    epoch_length: int       # stream positions per epoch (repeated augmentation shortens it)
    steps_per_epoch: float
    total_steps: int

    @property
    def num_epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch


@dataclasses.dataclass(frozen=True)
class LoopSpec:
    """The loop's rhythm and its run on disk."""

    batch_size: int = 256
    eval_batch_size: int = 256
    num_train_steps: int = -1
    num_epochs: float = 90.0
    ra_reps: int = 1
    seed: int = 0
    init_from: str = ""
    log_every_steps: int = 100
    eval_every_steps: int = -1
    eval_every_epochs: float = 0.0
    best_metric: str = "eval_top1"  # resolved: never "auto"
    early_stopping_patience: int = 0
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 3
    stop_after_steps: int = -1
    progress_bar: bool = True
    progress_interval_s: float = 30.0
    compilation_cache_dir: str = ""

    def lengths(self, num_train: int) -> Lengths:
        import math

        from resnet_jax.data import batching

        epoch_length = batching.epoch_length(num_train, self.ra_reps)
        steps_per_epoch = epoch_length / self.batch_size
        total = (self.num_train_steps if self.num_train_steps > 0
                 else math.ceil(self.num_epochs * steps_per_epoch))
        return Lengths(epoch_length, steps_per_epoch, total)

    def eval_interval(self, lengths: Lengths) -> int:
        """Steps between evaluations during training; -1: only at the end."""
        if self.eval_every_steps > 0:
            return self.eval_every_steps
        if self.eval_every_epochs > 0:
            return max(1, round(self.eval_every_epochs * lengths.steps_per_epoch))
        return -1

    def end_step(self, start_step: int, total_steps: int) -> int:
        """Where this invocation stops: the end, or `stop_after_steps`."""
        end = total_steps if self.stop_after_steps <= 0 else min(total_steps,
                                                                 self.stop_after_steps)
        return max(end, start_step)
