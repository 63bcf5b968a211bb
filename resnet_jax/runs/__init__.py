"""A run on disk, and a run's model for use (a map for a newcomer; the imports point downwards).

What a run leaves and how it survives:
    workdir      creation, the one-writer lock
    records      config.json (the resolved config) and classes.txt
    checkpoint   Orbax saves, restore with fall-back, the run's description
    history      metrics.jsonl and TensorBoard's event files; plots: the figures
    progress     the bar, or a plain line on a log file

What predict, evaluate, embed, export and a service read of a finished run:
    contract     the input contract: preprocessing, classes, task, output
    inference    a run's plan, contract, model and weights; export_run
    warm_start   weights from torchvision state dicts, safetensors or another run

Nothing here imports the training code (`resnet_jax.train`), which builds on it.
"""
