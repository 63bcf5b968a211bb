"""`python train.py --help`: see resnet_jax/cli/train.py (installed as `resnet-jax-train`)."""

from resnet_jax.cli.train import run

if __name__ == "__main__":
    run()
