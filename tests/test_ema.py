"""train/ema against torchvision's reference (torch.optim.swa_utils.AveragedModel as its
train.py uses it)."""

import jax
import numpy as np
import pytest

from resnet_jax import plan as plans
from resnet_jax.configs import default

torch = pytest.importorskip("torch", reason="the reference is torch (the [dev] extra)")


def test_ema_equals_torchvision_reference_over_50_steps():
    from resnet_jax.train import ema

    config = default.get_config()
    config.update(batch_size=64, ema_decay=0.99, ema_steps=4, warmup_epochs=1.0)
    num_train, num_epochs = 600, 10.0  # 10 iterations an epoch (the last one partial)
    ema_config = ema.EmaConfig.adjusted(plans.build(config).ema, config.batch_size, num_train,
                                        num_epochs)

    # torchvision references/classification/utils.py ExponentialMovingAverage, and train.py's
    # decay adjustment and update loop.
    class ExponentialMovingAverage(torch.optim.swa_utils.AveragedModel):
        def __init__(self, model, decay, device="cpu"):
            def ema_avg(avg_model_param, model_param, num_averaged):
                return decay * avg_model_param + (1 - decay) * model_param
            super().__init__(model, device, ema_avg, use_buffers=True)

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    adjust = 1 * config.batch_size * config.ema_steps / num_epochs
    alpha = min(1.0, (1.0 - config.ema_decay) * adjust)
    model_ema = ExponentialMovingAverage(model, device="cpu", decay=1.0 - alpha)
    iterations = -(-num_train // config.batch_size)

    rng = np.random.default_rng(3)
    names = {"0.weight": ("params", "kernel"), "0.bias": ("params", "bias"),
             "1.weight": ("params", "scale"), "1.bias": ("params", "shift"),
             "1.running_mean": ("batch_stats", "mean"), "1.running_var": ("batch_stats", "var")}
    averaged = None
    update = jax.jit(ema.update, static_argnums=4)
    for step in range(50):
        epoch, i = divmod(step, iterations)
        new = {"params": {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=4),
                          "scale": rng.normal(size=4), "shift": rng.normal(size=4)},
               "batch_stats": {"mean": rng.normal(size=4), "var": rng.uniform(0.5, 2, 4)}}
        new = jax.tree_util.tree_map(lambda x: x.astype(np.float32), new)
        with torch.no_grad():
            state = model.state_dict()
            for name, (group, key) in names.items():
                state[name].copy_(torch.tensor(new[group][key]))
        if i % config.ema_steps == 0:  # train.py, after optimizer.step()
            model_ema.update_parameters(model)
            if epoch < config.warmup_epochs:
                model_ema.n_averaged.fill_(0)
        if averaged is None:
            averaged = ema.initial(new["params"], new["batch_stats"])
        averaged = update(averaged, new["params"], new["batch_stats"], step, ema_config)

    theirs = model_ema.module.state_dict()
    for name, (group, key) in names.items():
        np.testing.assert_allclose(np.asarray(averaged[group][key]), theirs[name].numpy(),
                                   rtol=1e-6, atol=1e-7, err_msg=name)
    assert int(averaged["count"]) == int(model_ema.n_averaged)
