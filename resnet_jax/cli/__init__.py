"""The command-line tools, thin over the library: train, evaluate, predict, export. Each is a
top-level script in the repository (`python train.py ...`) and an installed console command
(`resnet-jax-train ...`)."""
