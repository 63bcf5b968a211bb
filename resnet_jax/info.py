"""Prints the environment a bug report needs: versions, devices, the extras installed, what
`kernels=auto` resolves to and whether the CPU extension builds and loads here (and why not).

    python -m resnet_jax.info        (installed: resnet-jax-info)
"""

from resnet_jax.environment import main

if __name__ == "__main__":
    main()
