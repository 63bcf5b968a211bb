"""A run's plan: the flat config (what users write and runs record) checked and resolved once
into small frozen specs, one per package that does a part of the work:

    plan = resolve(config)   # ConfigError (one line) for a config that cannot run
    plan.model      ModelSpec: the network; plan.model.create(num_classes, in_channels)
    plan.data       DataSpec: the dataset, its crops and augmentations (resnet_jax.data)
    plan.task       the task (resnet_jax.tasks): labels, loss, metrics, reports, predictions
    plan.optimizer  OptimizerSpec; plan.schedule: ScheduleSpec (resnet_jax.train.optim)
    plan.step       StepSpec: micro-batches, randomness, batch augmentations (train.steps)
    plan.ema        EmaSpec or None; plan.loop: LoopSpec, the loop's rhythm
    plan.trainable  the parts that train (None: all)

Derived facts (the evaluation crop, the trainable parts and the norms they freeze, the peak
learning rate, the weight decay of each parameter group, the task) are computed here, once; the
packages receive their spec and never read the config.
"""

from resnet_jax.plan.checks import VALUE_RANGES, ConfigError, validate_config
from resnet_jax.plan.planning import (
    Plan,
    build,
    data_spec,
    eval_mode_norms,
    model_spec,
    parse_trainable,
    resolve,
)
from resnet_jax.plan.specs import (
    BEST_METRICS,
    DTYPES,
    OPTIMIZERS,
    SCHEDULE_UNITS,
    SCHEDULES,
    BatchAugment,
    EmaSpec,
    Lengths,
    LoopSpec,
    ModelSpec,
    OptimizerSpec,
    ScheduleSpec,
    StepSpec,
    WeightDecays,
)

__all__ = ["BEST_METRICS", "DTYPES", "OPTIMIZERS", "SCHEDULES", "SCHEDULE_UNITS", "VALUE_RANGES",
           "BatchAugment",
           "ConfigError", "EmaSpec", "Lengths", "LoopSpec", "ModelSpec", "OptimizerSpec", "Plan",
           "ScheduleSpec", "StepSpec", "WeightDecays", "build", "data_spec", "eval_mode_norms",
           "model_spec", "parse_trainable", "resolve", "validate_config"]
