"""A training config checked before anything runs: one line for the first thing that cannot
work, naming the key, what is valid and how to fix it."""

from __future__ import annotations

import jax

from resnet_jax import models, tasks
from resnet_jax.data import autoaugment, datasets
from resnet_jax.errors import UserError
from resnet_jax.interop import pretrained
from resnet_jax.models import kernels
from resnet_jax.plan import planning, specs


class ConfigError(UserError):
    """A config that cannot run: reported in one line, before any compilation."""


def validate_config(config) -> planning.Plan:
    """Raises a one-line UserError for a config that cannot run (before any data or compile);
    returns its plan (`planning.build`, which refuses trainable parts the model lacks)."""
    models.check_model_name(config.model)
    kernels.check_name(config.kernels)
    datasets.check_dataset(config.dataset)
    _check_choice("schedule", config.schedule, specs.SCHEDULES)
    _check_choice("schedule_unit", config.schedule_unit, specs.SCHEDULE_UNITS)
    _check_choice("optimizer", config.optimizer, specs.OPTIMIZERS)
    autoaugment.check_policy(config.auto_augment)
    if config.shortcut not in ("A", "B"):
        raise ConfigError(f"shortcut must be 'A' or 'B', got {config.shortcut!r}")
    devices, accumulation = jax.device_count(), config.grad_accumulation_steps
    if accumulation < 1:
        raise ConfigError(f"grad_accumulation_steps must be >= 1, got {accumulation}")
    _check_multiple(config, "eval_batch_size", devices, f"the device count ({devices})")
    _check_multiple(config, "batch_size", devices * accumulation,
                    f"the device count ({devices})" if accumulation == 1 else
                    f"the device count ({devices}) times grad_accumulation_steps ({accumulation})")
    group, micro_batch = config.bn_group_size, config.batch_size // accumulation
    if group < 0 or (group and micro_batch % group):
        raise ConfigError(f"bn_group_size={group} must be 0 (global batch) or divide the "
                          + ("micro-batch" if accumulation > 1 else "batch_size")
                          + f" of {micro_batch}")
    if config.dtype not in specs.DTYPES:
        raise ConfigError(f"unknown dtype {config.dtype!r}; valid: {', '.join(specs.DTYPES)}")
    if config.num_train_steps <= 0 and config.num_epochs <= 0:
        raise ConfigError("set num_train_steps > 0 or num_epochs > 0")
    models.check_head(config.head, config.head_hidden, config.head_dropout)
    if tasks.name_for_dataset(config.dataset) == "multilabel":
        soft = [f"{key}={config[key]}" for key in ("label_smoothing", "mixup_alpha",
                                                    "cutmix_alpha") if config[key] > 0]
        if soft:
            raise ConfigError(f"{', '.join(soft)}: not defined for multi-label targets here "
                              f"(a sigmoid per class); set them to 0 for dataset=multilabel")
    _check_evaluations(config)
    _check_choice("class_weights", config.class_weights, ("", "balanced"))
    if config.class_weights and tasks.name_for_dataset(config.dataset) == "multilabel":
        raise ConfigError("class_weights=balanced weights one class per image; a multi-label "
                          "run has a sigmoid per class: set class_weights=''")
    if pretrained.is_name(config.init_from):
        pretrained.resolve(config.init_from)  # an unknown name: one line, before anything runs
    _check_frozen_parts_have_weights(config)
    eval_crop = planning.data_spec(config).eval_crop
    if config.dataset in datasets.FILE_DATASETS and config.eval_resize < eval_crop:
        raise ConfigError(f"eval_resize={config.eval_resize} must be >= the eval crop "
                          f"{eval_crop} (eval resizes the shorter side to eval_resize, then "
                          f"crops eval_crop_size, or image_size when that is 0)")
    for key, (works, valid) in VALUE_RANGES.items():
        if not works(config[key]):
            raise ConfigError(f"{key} must be {valid}, got {config[key]}")
    return planning.build(config)


# Values that cannot work, refused before anything runs: key -> (test, the valid range).
VALUE_RANGES = {
    "learning_rate": (lambda v: v >= 0, ">= 0 (a negative rate climbs the loss)"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "warmup_epochs": (lambda v: v >= 0, ">= 0"),
    "warmup_start_factor": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "lr_decay_factor": (lambda v: v > 0, "> 0"),
    "bn_momentum": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "bn_epsilon": (lambda v: v > 0, "> 0"),
    "image_size": (lambda v: v >= 1, ">= 1"),
    "eval_crop_size": (lambda v: v >= 0, ">= 0 (0: image_size)"),
    "holdout_fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "max_image_pixels": (lambda v: v >= 1, ">= 1"),
    "crop_min_area": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "progress_interval_s": (lambda v: v > 0, "> 0"),
    "grad_clip_norm": (lambda v: v >= 0, ">= 0 (0: no clipping)"),
    "layer_decay": (lambda v: 0 < v <= 1, "in (0, 1] (1: every layer at the full rate)"),
    "threshold": (lambda v: 0 < v < 1, "in (0, 1)"),
    "ema_decay": (lambda v: 0 <= v < 1, "in [0, 1) (0: no EMA)"),
    "ema_steps": (lambda v: v >= 1, ">= 1"),
    "random_erasing": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "ra_num_ops": (lambda v: v >= 1, ">= 1"),
    "ra_reps": (lambda v: 1 <= v <= 256, "in 1..256 (1: off)"),
    "ra_magnitude": (lambda v: 0 <= v < 31, "a bin in 0..30"),
    "drop_path_rate": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "mixup_alpha": (lambda v: v >= 0, ">= 0 (0: off)"),
    "cutmix_alpha": (lambda v: v >= 0, ">= 0 (0: off)"),
    "lars_eeta": (lambda v: v > 0, "> 0"),
    "adam_beta1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_beta2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_epsilon": (lambda v: v > 0, "> 0"),
    "end_learning_rate": (lambda v: v >= 0, ">= 0"),
    "log_every_steps": (lambda v: v >= 1, ">= 1"),
    "checkpoint_every_steps": (lambda v: v >= 1, ">= 1 (a run also saves whenever it stops)"),
    "keep_checkpoints": (lambda v: v >= 1, ">= 1 (with none kept, nothing could resume)"),
    "eval_every_epochs": (lambda v: v >= 0, ">= 0 (0: by eval_every_steps, or at the end)"),
    "early_stopping_patience": (lambda v: v >= 0, ">= 0 (0: no early stopping)"),
}


def _check_frozen_parts_have_weights(config) -> None:
    """One rule for `freeze_backbone` and `trainable`: a part that does not train keeps the
    weights it starts with, so without init_from it would stay at its random initialisation."""
    parts = planning.parse_trainable(config.trainable, config.model, config.freeze_backbone)
    if parts is None or config.init_from:
        return
    frozen = [part for part in ("stem", *models.stage_names(config.model), "head")
              if part not in parts]
    said = ("freeze_backbone=True" if config.freeze_backbone
            else f"trainable={config.trainable!r}")
    kept = ("the convolutions of " if "norm" in parts else "") + "+".join(frozen)
    raise ConfigError(f"{said} keeps {kept} as it starts, and without init_from "
                      f"that is a random initialisation: set init_from to the weights to keep "
                      f"(a .pth/.safetensors file, a name such as torchvision:resnet18, or a "
                      f"workdir), or train every part (trainable=all)")


def _check_multiple(config, key: str, multiple_of: int, what: str) -> None:
    value = config[key]
    if value <= 0 or value % multiple_of:
        raise ConfigError(f"{key}={value} must be a positive multiple of {what}; try "
                          f"{max(multiple_of, value - value % multiple_of)}")


def _check_choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {key} {value!r}; valid: {', '.join(valid)}")


def _check_evaluations(config) -> None:
    """When the run evaluates, what the best checkpoint keeps, and when it stops early."""
    _check_choice("best_metric", config.best_metric, ("auto", *specs.BEST_METRICS))
    task = tasks.name_for_dataset(config.dataset)
    if config.best_metric == "eval_map" and task != "multilabel":
        raise ConfigError("best_metric=eval_map: mAP is a multi-label metric; this run has one "
                          "label per image (use eval_top1 or eval_loss)")
    periodic = config.eval_every_steps > 0 or config.eval_every_epochs > 0
    if config.early_stopping_patience > 0 and not periodic:
        raise ConfigError(f"early_stopping_patience={config.early_stopping_patience} counts "
                          f"evaluations during training, and this config evaluates only at the "
                          f"end: set eval_every_epochs (or eval_every_steps)")
