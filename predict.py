"""`python predict.py --help`: see resnet_jax/cli/predict.py (installed as `resnet-jax-predict`)."""

from resnet_jax.cli.predict import run

if __name__ == "__main__":
    run()
