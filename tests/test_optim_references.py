"""train/optim against the references of modern recipes: MLPerf's LARS and polynomial
schedule (NumPy transcriptions of the reference's formulas), torch's gradient clipping,
parameter-group weight decay and torchvision's epoch-stepped SequentialLR (the real torch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import plan as plans
from resnet_jax.configs import default
from resnet_jax.train import optim

torch = pytest.importorskip("torch", reason="the references are torch (the [dev] extra)")


def _params(rng):
    return {"conv1": {"kernel": rng.normal(size=(3, 3, 2, 4))},
            "bn1": {"scale": 1 + 0.1 * rng.normal(size=4), "bias": 0.1 * rng.normal(size=4)},
            "fc": {"kernel": rng.normal(size=(4, 5)), "bias": 0.1 * rng.normal(size=5)}}


def _f32(tree):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), tree)


# --- MLPerf LARS ----------------------------------------------------------------------------

def _reference_lars(params, grads_per_step, lrs, momentum, wd, eeta, eps, nesterov):
    """mlcommons/training image_classification/tensorflow2/lars_optimizer.py,
    `_resource_apply_dense` + `compute_lr`, in float64 NumPy; skip_list =
    ['batch_normalization', 'bias']: every 1-D parameter here."""
    params = {k: {n: np.array(v, np.float64) for n, v in d.items()} for k, d in params.items()}
    mom = {k: {n: np.zeros_like(v) for n, v in d.items()} for k, d in params.items()}
    for grads, lr in zip(grads_per_step, lrs):
        for k in params:
            for n, var in params[k].items():
                grad = np.array(grads[k][n], np.float64)
                scaled_lr = lr
                if var.ndim > 1:  # not in the skip list
                    w_norm, g_norm = np.linalg.norm(var), np.linalg.norm(grad)
                    trust = (eeta * w_norm / (g_norm + wd * w_norm + eps)
                             if w_norm > 0 and g_norm > 0 else 1.0)
                    scaled_lr = lr * trust
                    grad = grad + wd * var
                mom_t = mom[k][n] * momentum - grad * scaled_lr
                mom[k][n] = mom_t
                params[k][n] = (var + mom_t * momentum - grad * scaled_lr if nesterov
                                else var + mom_t)
    return params


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_five_steps_equal_mlperf_reference(nesterov):
    rng = np.random.default_rng(0)
    params = _params(rng)
    grads = [jax.tree_util.tree_map(lambda p: rng.normal(size=p.shape), params)
             for _ in range(5)]
    lrs = [0.0, 2.5, 5.0, 7.5, 10.0]
    tx = optim.mlperf_lars(lambda count: jnp.asarray(lrs)[count], momentum=0.9,
                           weight_decay=5e-5, eeta=0.001, nesterov=nesterov)
    ours = _f32(params)
    state = tx.init(ours)
    for g in grads:
        updates, state = tx.update(_f32(g), state, ours)
        ours = jax.tree_util.tree_map(lambda p, u: p + u, ours, updates)
    expected = _reference_lars(params, grads, lrs, 0.9, 5e-5, 0.001, 1e-7, nesterov)
    for (path, value), want in zip(jax.tree_util.tree_leaves_with_path(ours),
                                   jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(np.asarray(value, np.float64), want, rtol=1e-6, atol=1e-7,
                                   err_msg=jax.tree_util.keystr(path))


def test_polynomial_schedule_equals_mlperf_polynomial_decay_with_warmup():
    peak, end, warmup, total = 10.0, 1e-4, 5 * 392.5, 37 * 392
    decay_steps = total - warmup + 1

    def reference(step):  # lars_util.py PolynomialDecayWithWarmup + Keras PolynomialDecay
        if step <= warmup:
            return peak * step / warmup
        p = min(step - warmup, decay_steps) / decay_steps
        return (peak - end) * (1 - p) ** 2.0 + end

    schedule = optim.polynomial_warmup_schedule(peak, end, warmup, total)
    for step in [0, 1, 1000, 1962, 1963, 5000, total - 1, total]:
        assert float(schedule(step)) == pytest.approx(reference(step), rel=1e-6, abs=1e-9)


# --- torch's clipping and parameter groups --------------------------------------------------

def test_clip_grad_norm_equals_torch():
    rng = np.random.default_rng(1)
    grads = jax.tree_util.tree_map(lambda g: g.astype(np.float32), _params(rng))
    for max_norm in (0.5, 100.0):
        tensors = [torch.tensor(g, requires_grad=True) for g in jax.tree_util.tree_leaves(grads)]
        for t, g in zip(tensors, jax.tree_util.tree_leaves(grads)):
            t.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_norm_(tensors, max_norm)
        clipped, _ = optim.clip_grad_norm(max_norm).update(
            jax.tree_util.tree_map(jnp.asarray, grads), None)
        for ours, theirs in zip(jax.tree_util.tree_leaves(clipped), tensors):
            np.testing.assert_allclose(np.asarray(ours), theirs.grad.numpy(), rtol=1e-6)


def test_norm_and_bias_weight_decay_equal_torch_parameter_groups():
    config = default.get_config()
    config.update(weight_decay=2e-5, norm_weight_decay=0.0, bias_weight_decay=1e-3,
                  learning_rate=0.5, momentum=0.9, grad_clip_norm=1.0)
    rng = np.random.default_rng(2)
    params = jax.tree_util.tree_map(lambda p: p.astype(np.float32), _params(rng))
    grads = [jax.tree_util.tree_map(lambda p: rng.normal(size=p.shape).astype(np.float32),
                                    params) for _ in range(3)]
    tx = optim.create_optimizer(plans.build(config).optimizer, optax_constant(0.5))
    ours = jax.tree_util.tree_map(jnp.asarray, params)
    state = tx.init(ours)
    for g in grads:
        updates, state = tx.update(jax.tree_util.tree_map(jnp.asarray, g), state, ours)
        ours = jax.tree_util.tree_map(lambda p, u: p + u, ours, updates)

    names = [("conv1", "kernel", 2e-5), ("fc", "kernel", 2e-5), ("bn1", "scale", 0.0),
             ("bn1", "bias", 0.0), ("fc", "bias", 1e-3)]
    tensors = {(m, n): torch.tensor(params[m][n], requires_grad=True) for m, n, _ in names}
    sgd = torch.optim.SGD([{"params": [tensors[(m, n)]], "weight_decay": wd}
                           for m, n, wd in names], lr=0.5, momentum=0.9)
    for g in grads:
        for (m, n), t in tensors.items():
            t.grad = torch.tensor(g[m][n])
        torch.nn.utils.clip_grad_norm_(list(tensors.values()), 1.0)
        sgd.step()
    for (m, n), t in tensors.items():
        np.testing.assert_allclose(np.asarray(ours[m][n]), t.detach().numpy(), rtol=2e-6,
                                   atol=1e-7, err_msg=f"{m}.{n}")


def test_adamw_steps_equal_torch_adamw_with_parameter_groups():
    """optimizer=adamw against torch.optim.AdamW, float64, five steps, decoupled weight decay
    on the kernels, none on batch norm (norm_weight_decay=0), its own on the classifier's bias,
    at a rate that changes every step."""
    config = default.get_config()
    config.update(optimizer="adamw", weight_decay=0.05, norm_weight_decay=0.0,
                  bias_weight_decay=0.01, adam_beta1=0.8, adam_beta2=0.99, adam_epsilon=1e-6)
    rng = np.random.default_rng(4)
    params = _params(rng)
    grads = [jax.tree_util.tree_map(lambda p: rng.normal(size=p.shape), params)
             for _ in range(5)]
    lrs = [1e-3, 2e-3, 3e-3, 2e-3, 1e-3]
    with jax.enable_x64(True):
        tx = optim.create_optimizer(plans.build(config).optimizer,
                                    lambda count: jnp.asarray(lrs, jnp.float64)[count])
        ours = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float64), params)
        state = tx.init(ours)
        for g in grads:
            updates, state = tx.update(jax.tree_util.tree_map(jnp.asarray, g), state, ours)
            ours = jax.tree_util.tree_map(lambda p, u: p + u, ours, updates)

    names = [("conv1", "kernel", 0.05), ("fc", "kernel", 0.05), ("bn1", "scale", 0.0),
             ("bn1", "bias", 0.0), ("fc", "bias", 0.01)]
    tensors = {(m, n): torch.tensor(params[m][n], dtype=torch.float64, requires_grad=True)
               for m, n, _ in names}
    adam = torch.optim.AdamW([{"params": [tensors[(m, n)]], "weight_decay": wd}
                              for m, n, wd in names], lr=lrs[0], betas=(0.8, 0.99), eps=1e-6)
    for g, lr in zip(grads, lrs):
        for group in adam.param_groups:
            group["lr"] = lr
        for (m, n), t in tensors.items():
            t.grad = torch.tensor(g[m][n], dtype=torch.float64)
        adam.step()
    for (m, n), t in tensors.items():
        assert not np.allclose(t.detach().numpy(), params[m][n])  # the steps moved it
        np.testing.assert_allclose(np.asarray(ours[m][n]), t.detach().numpy(), rtol=1e-12,
                                   atol=1e-14, err_msg=f"{m}.{n}")


def optax_constant(value):
    return lambda count: value


def test_epoch_schedule_equals_torchvisions_sequential_lr():
    """torchvision train.py: SequentialLR([LinearLR(start_factor=0.01, total_iters=5),
    CosineAnnealingLR(T_max=epochs - 5)], milestones=[5]), stepped once an epoch."""
    config = default.get_config()
    config.update(learning_rate=0.5, lr_scaling_batch_size=0, schedule="cosine",
                  warmup_epochs=5.0, warmup_start_factor=0.01, schedule_unit="epoch")
    epochs, iterations = 40, 7  # an epoch: ceil(N / batch) = 7 iterations
    schedule = optim.create_schedule(plans.build(config).schedule, 6.5, epochs * iterations)
    parameter = torch.nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([parameter], lr=0.5)
    torch_schedule = torch.optim.lr_scheduler.SequentialLR(sgd, [
        torch.optim.lr_scheduler.LinearLR(sgd, start_factor=0.01, total_iters=5),
        torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=epochs - 5)], milestones=[5])
    for epoch in range(epochs):
        theirs = sgd.param_groups[0]["lr"]
        for i in (0, iterations - 1):
            assert float(schedule(epoch * iterations + i)) == pytest.approx(theirs, rel=1e-5,
                                                                            abs=1e-7)
        sgd.step()
        torch_schedule.step()


# --- timm's layer-wise learning-rate decay ---------------------------------------------------

def test_layer_decay_groups_a_resnet_as_timm_does():
    """Every parameter of resnet50 gets the learning-rate scale timm's
    `param_groups_layer_decay` gives the same parameter of timm's resnet50."""
    timm = pytest.importorskip("timm")
    from timm.optim._param_groups import param_groups_layer_decay

    from resnet_jax import models
    from resnet_jax.interop import torchvision_weights

    model = models.create_model("resnet50", num_classes=10)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                  jnp.zeros((1, 32, 32, 3)), train=False))
    ids, count = optim.layer_ids(variables["params"])
    scales = jax.tree_util.tree_map(lambda p, i: np.full(p.shape, 0.7 ** (count - 1 - i),
                                                         np.float32), variables["params"], ids)
    stats = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32),
                                   variables["batch_stats"])
    ours = torchvision_weights.to_torchvision("resnet50", {"params": scales,
                                                           "batch_stats": stats})
    reference = timm.create_model("resnet50", num_classes=10)
    names = {id(p): n for n, p in reference.named_parameters()}
    compared = 0
    for group in param_groups_layer_decay(reference, weight_decay=0.0, layer_decay=0.7):
        for parameter in group["params"]:
            name = names[id(parameter)]
            np.testing.assert_allclose(ours[name].numpy(), group["lr_scale"], rtol=1e-6,
                                       err_msg=name)
            compared += 1
    assert compared == len(names) == 161  # every parameter of the network


def test_layer_decay_steps_equal_torch_sgd_with_a_learning_rate_per_layer():
    config = default.get_config()
    config.update(weight_decay=1e-3, learning_rate=0.5, momentum=0.9, nesterov=True,
                  layer_decay=0.5)
    rng = np.random.default_rng(3)
    params = {"conv1": {"kernel": rng.normal(size=(3, 3, 2, 4))},
              "layer1_0": {"conv1": {"kernel": rng.normal(size=(3, 3, 4, 4))}},
              "layer1_1": {"conv1": {"kernel": rng.normal(size=(3, 3, 4, 4))}},
              "fc": {"kernel": rng.normal(size=(4, 5))}}
    params = jax.tree_util.tree_map(lambda p: p.astype(np.float32), params)
    grads = [jax.tree_util.tree_map(lambda p: rng.normal(size=p.shape).astype(np.float32),
                                    params) for _ in range(3)]
    tx = optim.create_optimizer(plans.build(config).optimizer, optax_constant(0.5))
    ours, state = params, tx.init(params)
    for g in grads:
        updates, state = tx.update(g, state, ours)
        ours = jax.tree_util.tree_map(lambda p, u: p + u, ours, updates)
    # the stem 0.5^3, the blocks 0.5^2 and 0.5, the head 1: torch parameter groups
    layers = {"conv1": 0.125, "layer1_0": 0.25, "layer1_1": 0.5, "fc": 1.0}
    leaf = lambda tree, name: np.asarray(jax.tree_util.tree_leaves(tree[name])[0])  # noqa: E731
    tensors = {name: torch.tensor(leaf(params, name), requires_grad=True) for name in layers}
    sgd = torch.optim.SGD([{"params": [tensors[n]], "lr": 0.5 * s} for n, s in layers.items()],
                          lr=0.5, momentum=0.9, nesterov=True, weight_decay=1e-3)
    for g in grads:
        for name, t in tensors.items():
            t.grad = torch.tensor(leaf(g, name))
        sgd.step()
    for name, t in tensors.items():
        np.testing.assert_allclose(leaf(ours, name), t.detach().numpy(), rtol=2e-6, atol=1e-7,
                                   err_msg=name)
