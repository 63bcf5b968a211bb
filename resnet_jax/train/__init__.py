"""Training: the config and model it describes (`config`), optimiser and schedules (`optim`),
TrainState and the jitted steps (`steps`), the loop (`loop.train_and_evaluate`), checkpoints and
metrics."""
