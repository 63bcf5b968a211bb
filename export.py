"""`python export.py --help`: see resnet_jax/cli/export.py (installed as `resnet-jax-export`)."""

from resnet_jax.cli.export import run

if __name__ == "__main__":
    run()
