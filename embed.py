"""`python embed.py --help`: see resnet_jax/cli/embed.py (installed as `resnet-jax-embed`)."""

from resnet_jax.cli.embed import run

if __name__ == "__main__":
    run()
