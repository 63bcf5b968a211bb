"""Training: what one step computes and the loop around it (a map for a newcomer; the imports
point downwards). The plan it runs is `resnet_jax.plan`; the run it leaves on disk is
`resnet_jax.runs`; what it learns to predict is `resnet_jax.tasks`.

    steps           TrainState, train_step and eval_step (jitted, pure), their compilation
    optim           SGD / LARS, schedules, weight decay, layer decay, frozen parts
    trainable       which parameters train (the mask) and the cut gradients
    ema             the averaged weights; batch_augment: mixup, cutmix, random erasing
    metrics         a step's sums on the device, their accumulation, the divergence check
    evaluation      every held-out example once, the report; evaluate.py's evaluate_weights
    preemption      SIGTERM / SIGINT / SIGHUP as a clean stop
    loop            train_and_evaluate: plan, restore, compile, train, finish
"""
