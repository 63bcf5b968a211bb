from resnet_jax.bench.train_step import main

main()
