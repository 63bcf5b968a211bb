"""Small training runs on the embedded digits, shared by the training and fault tests."""

from resnet_jax.configs import digits


def small_digits_config(cache_dir, **overrides):
    config = digits.get_config()
    # resnet8, the smallest of the CIFAR family: these tests check the training loop's
    # plumbing, not the depth, and it compiles in half resnet20's time.
    config.update(model="resnet8", num_train_steps=24, batch_size=32, eval_batch_size=48,
                  log_every_steps=6, checkpoint_every_steps=12, eval_every_steps=12,
                  progress_bar=False, compilation_cache_dir=cache_dir)
    config.update(overrides)
    return config
