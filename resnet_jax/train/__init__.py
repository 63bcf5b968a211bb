"""Training, in three groups of modules (a map for a newcomer; the imports point downwards).

The training core, what one step computes:
    config          the config's checks and the model it describes
    steps           TrainState, train_step and eval_step (jitted, pure), their compilation
    optim           SGD / LARS, schedules, weight decay, frozen parts
    ema             the averaged weights; batch_augment: mixup, cutmix, random erasing
    loop            train_and_evaluate: plan, restore, compile, train, finish

The run on disk, what a run leaves and how it survives:
    checkpoint      Orbax saves, restore with fall-back, the run's description
    workdir         creation, the one-writer lock; records: config.json, classes.txt
    metrics         metrics.jsonl and the reports; plots: the figures; progress: the bar
    evaluation      every held-out example once, the report; evaluate.py's evaluate_weights
    preemption      SIGTERM / SIGINT / SIGHUP as a clean stop

A run's model for use:
    inference       a run's model and preprocessing (evaluate, predict, embed), export_run
    warm_start      init_from: torchvision state dicts, safetensors, other runs
"""
