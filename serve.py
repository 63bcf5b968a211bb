"""`python serve.py --help`: see resnet_jax/cli/serve.py (installed as `resnet-jax-serve`)."""

from resnet_jax.cli.serve import run

if __name__ == "__main__":
    run()
