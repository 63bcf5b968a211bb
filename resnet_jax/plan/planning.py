"""The plan of a run: the flat config resolved once into the specs of `resnet_jax.plan.specs`.

`resolve(config)` checks the config (a one-line ConfigError for what cannot run) and builds the
plan; `build(config)` builds it without the checks that depend on this machine (the device
count), for a finished run's recorded config read back on another machine.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from resnet_jax import models, tasks
from resnet_jax.data.spec import DataSpec
from resnet_jax.errors import UserError
from resnet_jax.plan import specs

if TYPE_CHECKING:  # ml_collections stays unimported where only specs are used (bench/)
    import ml_collections


@dataclasses.dataclass(frozen=True)
class Plan:
    config: ml_collections.FrozenConfigDict  # the flat config: what config.json records
    model: specs.ModelSpec
    data: DataSpec
    task: tasks.Task
    optimizer: specs.OptimizerSpec
    schedule: specs.ScheduleSpec
    step: specs.StepSpec
    ema: specs.EmaSpec | None
    loop: specs.LoopSpec
    trainable: frozenset[str] | None  # the parts that train; None: every parameter
    trainable_text: str  # as the run's opening line shows it

    def for_data(self, class_counts) -> Plan:
        """The plan with its task bound to the training set's class counts (class weights)."""
        task = self.task.for_data(class_counts)
        return dataclasses.replace(self, task=task, step=dataclasses.replace(self.step,
                                                                             task=task))


def resolve(config) -> Plan:
    """The plan of `config`, checked (`validate_config`)."""
    from resnet_jax.plan.checks import validate_config

    return validate_config(config)


def build(config) -> Plan:
    """The plan of `config` (unchecked: a run's recorded config, which was checked when it
    started)."""
    import ml_collections

    trainable = parse_trainable(config.trainable, config.model, config.freeze_backbone)
    task = tasks.for_dataset(config.dataset, label_smoothing=config.label_smoothing,
                             threshold=config.threshold,
                             balanced=config.class_weights == "balanced")
    return Plan(
        config=ml_collections.FrozenConfigDict(config),
        model=model_spec(config, trainable),
        data=data_spec(config),
        task=task,
        optimizer=specs.OptimizerSpec(
            config.optimizer, config.momentum, config.nesterov, _weight_decays(config),
            config.lars_eeta, config.lars_epsilon, (config.adam_beta1, config.adam_beta2),
            config.adam_epsilon, config.grad_clip_norm, config.layer_decay, trainable),
        schedule=specs.ScheduleSpec(
            config.schedule, _peak_learning_rate(config), config.schedule_unit,
            config.warmup_epochs, config.warmup_start_factor, tuple(config.lr_boundaries_steps),
            tuple(config.lr_boundaries_epochs), config.lr_decay_factor,
            config.end_learning_rate, config.poly_power),
        step=specs.StepSpec(
            task, config.grad_accumulation_steps,
            config.seed if config.drop_path_rate > 0 or config.head_dropout > 0 else None,
            _batch_augment(config)),
        ema=(specs.EmaSpec(config.ema_decay, config.ema_steps, int(config.warmup_epochs))
             if config.ema_decay > 0 else None),
        loop=specs.LoopSpec(
            config.batch_size, config.eval_batch_size, config.num_train_steps,
            config.num_epochs, config.ra_reps, config.seed, config.init_from,
            config.log_every_steps, config.eval_every_steps, config.eval_every_epochs,
            task.best_metric if config.best_metric == "auto" else config.best_metric,
            config.early_stopping_patience, config.checkpoint_every_steps,
            config.keep_checkpoints, config.stop_after_steps, bool(config.progress_bar),
            config.progress_interval_s, config.compilation_cache_dir),
        trainable=trainable,
        trainable_text=("head (freeze_backbone)" if config.freeze_backbone
                        else config.trainable))


def model_spec(config, trainable: frozenset[str] | None = None) -> specs.ModelSpec:
    residual_cifar = models.is_cifar(config.model) and not config.model.startswith("plain")
    return specs.ModelSpec(
        config.model, config.kernels, config.dtype,
        config.shortcut if residual_cifar else None,  # plain nets have none
        config.zero_init_residual, config.bn_momentum, config.bn_epsilon, config.bn_group_size,
        config.drop_path_rate, eval_mode_norms(trainable, config.model), config.head,
        config.head_hidden, config.head_dropout)


def data_spec(config) -> DataSpec:
    """What the input pipeline is told. The evaluation crop is `eval_crop_size`, or
    `image_size` where that is 0: decided here, once."""
    return DataSpec(
        config.dataset, config.data_dir, config.eval_split, config.image_size,
        config.eval_crop_size or config.image_size, config.eval_resize, config.crop_min_area,
        bool(config.random_flip), config.auto_augment, config.ra_num_ops, config.ra_magnitude,
        config.holdout_fraction, config.max_image_pixels, bool(config.skip_bad_images),
        config.fake_num_classes, config.fake_num_examples, config.seed)


def parse_trainable(text: str, model_name: str,
                    freeze_backbone: bool = False) -> frozenset[str] | None:
    """The parts `trainable` names (`resnet_jax.train.trainable`), or None for every
    parameter; UserError for a part the model lacks."""
    if freeze_backbone:
        if text not in ("all", "head"):
            raise UserError(f"freeze_backbone=True means trainable='head'; it cannot be "
                            f"combined with trainable={text!r} (drop one of them)")
        return frozenset({"head"})
    valid = ("stem", *models.stage_names(model_name), "norm", "head")
    parts = [part.strip() for part in text.split("+")]
    if parts == ["all"]:
        return None
    unknown = [part for part in parts if part not in valid]
    if unknown or not parts:
        raise UserError(f"trainable={text!r}: {', '.join(unknown) or 'nothing'} is not a part "
                        f"of {model_name}; join parts with '+' from {', '.join(valid)}, or "
                        f"'all'")
    if set(valid) <= set(parts):
        return None
    return frozenset(parts)


def eval_mode_norms(trainable: frozenset[str] | None, model_name: str) -> tuple[str, ...]:
    """The stem and stages whose batch norms run in eval mode in training: the frozen ones."""
    if trainable is None or "norm" in trainable:
        return ()
    return tuple(name for name in ("stem", *models.stage_names(model_name))
                 if name not in trainable)


def _peak_learning_rate(config) -> float:
    """`learning_rate`, linearly scaled with the batch size if asked."""
    if config.lr_scaling_batch_size:
        return config.learning_rate * config.batch_size / config.lr_scaling_batch_size
    return config.learning_rate


def _weight_decays(config) -> specs.WeightDecays:
    """Norms and biases as `norm_weight_decay` / `bias_weight_decay` say (< 0: like the rest,
    or 0 with `decay_bn_and_bias=False`)."""
    default = config.weight_decay if config.decay_bn_and_bias else 0.0
    return specs.WeightDecays(
        config.weight_decay,
        default if config.norm_weight_decay < 0 else config.norm_weight_decay,
        default if config.bias_weight_decay < 0 else config.bias_weight_decay)


def _batch_augment(config) -> specs.BatchAugment | None:
    augment = specs.BatchAugment(config.seed, config.random_erasing, config.mixup_alpha,
                                 config.cutmix_alpha)
    return augment if augment.active else None
