"""How far each framework's float32 gradients fall from its own float64 gradients.

    python tools/grad_precision.py [--model resnet18] [--image_size 64] [--batch_size 8]
        [--one_pass_variance] [--torch_mkldnn 0]

Same weights and batch in both frameworks; for every parameter tensor the relative error
max|g32 - g64| / max|g64| is computed, and the worst tensor is reported, for torch (eager), JAX
under jit and JAX op by op (jax.disable_jit). Prints one line per mode.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import torch

from resnet_jax import models
from resnet_jax.interop import torch_models
from resnet_jax.interop import torchvision_weights as torch_interop


def worst(grads32: dict, grads64: dict) -> tuple[float, str]:
    errors = {k: float(np.abs(grads32[k] - grads64[k]).max() / (np.abs(grads64[k]).max() + 1e-300))
              for k in grads64}
    key = max(errors, key=errors.get)
    return errors[key], key


def torch_grads(model, x, labels, dtype):
    model = model.to(dtype).train()
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x).to(dtype)),
                                             torch.from_numpy(labels))
    loss.backward()
    return {k: p.grad.double().numpy() for k, p in model.named_parameters()}


def jax_grads(name, num_classes, state_dict, x, labels, dtype, jit: bool, one_pass=False,
              kernels="xla"):
    with jax.enable_x64(True):
        model = models.create_model(name, num_classes=num_classes, dtype=dtype, param_dtype=dtype,
                                    bn_one_pass_variance=one_pass, kernels=kernels)
        sd = {k: v.to(getattr(torch, jnp.dtype(dtype).name)) for k, v in state_dict.items()}
        variables = torch_interop.from_torchvision(name, sd)

        def loss_fn(params, x):
            logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                    x, train=True, mutable=["batch_stats"])
            one_hot = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
            return -jnp.mean(jnp.sum(one_hot * jax.nn.log_softmax(logits), axis=-1))

        grad_fn = jax.grad(loss_fn)
        xj = jnp.asarray(x.transpose(0, 2, 3, 1), dtype)
        if jit:
            grads = jax.jit(grad_fn)(variables["params"], xj)
        else:
            with jax.disable_jit():
                grads = grad_fn(variables["params"], xj)
        return {k: v.astype(np.float64)
                for k, v in torch_interop.torch_arrays(grads, "params").items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--one_pass_variance", action="store_true",
                        help="measure the E[x^2]-E[x]^2 variance that BatchNorm avoids")
    parser.add_argument("--kernels", default="auto",
                        help="the float32 side's kernels (float64 is always XLA's)")
    parser.add_argument("--torch_mkldnn", type=int, default=1,
                        help="0 disables torch's oneDNN CPU convolutions")
    args = parser.parse_args()
    torch.backends.mkldnn.enabled = bool(args.torch_mkldnn)
    torch.manual_seed(0)
    num_classes = 10
    model = torch_models.create_torch_model(args.model, num_classes=num_classes)
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.RandomState(0)
    x = rng.randn(args.batch_size, 3, args.image_size, args.image_size).astype(np.float64)
    labels = rng.randint(0, num_classes, args.batch_size)

    reference = torch_grads(model, x, labels, torch.float64)
    err, key = worst(torch_grads(model, x, labels, torch.float32), reference)
    print(f"torch float32 eager : worst {err:.2e} at {key}")
    err, key = worst(torch_grads(model, x, labels, torch.float64), reference)
    print(f"torch float64 again : worst {err:.2e} at {key}")
    jax64 = jax_grads(args.model, num_classes, state_dict, x, labels, jnp.float64, jit=True)
    err, key = worst(jax64, reference)
    print(f"jax float64 vs torch float64: worst {err:.2e} at {key}")
    for jit in (True, False):
        g32 = jax_grads(args.model, num_classes, state_dict, x, labels, jnp.float32, jit=jit,
                        one_pass=args.one_pass_variance, kernels=args.kernels)
        err, key = worst(g32, jax64)
        print(f"jax float32 {'jit       ' if jit else 'op by op  '}: worst {err:.2e} at {key}")


if __name__ == "__main__":
    main()
