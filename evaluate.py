"""`python evaluate.py --help`: see resnet_jax/cli/evaluate.py (installed as
`resnet-jax-evaluate`)."""

from resnet_jax.cli.evaluate import run

if __name__ == "__main__":
    run()
