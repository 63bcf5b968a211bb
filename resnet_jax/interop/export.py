"""A model for serving stacks, as files: a `jax.export` artifact (StableHLO), an ONNX model
checked with onnxruntime, or a torchvision state dict.

    export_inference, export_with_weights   the jax.export artifacts (in memory)
    write_jax, write_onnx, write_torchvision  the files; each returns the input's description
                                               (layout, shape, dtype) for a sidecar record
    load_jax                                   a `.jax` file, checked against this machine

Export always uses the portable kernels (`kernels="xla"`): the CPU kernels are custom calls
that only this package's process can run. The function exported is the same one to the parity
tolerances, whatever kernels trained the weights. ONNX and torchvision need the `[export]` and
`[torch]` extras.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from resnet_jax.errors import UserError
from resnet_jax.files import write_atomically
from resnet_jax.models import ResNet, is_cifar, parts

# How close onnxruntime's logits must be to ours (relative to the largest logit).
ONNX_TOLERANCE = 1e-4


def export_inference(model: ResNet, variables, batch_shape, dtype=jnp.float32) -> export.Exported:
    """`model.apply(variables, images, train=False)` for images of `batch_shape` (NHWC; the
    batch dimension may be a symbolic "b"), exported with the portable kernels."""
    portable = model.clone(kernels="xla")
    images = jax.ShapeDtypeStruct(tuple(export.symbolic_shape(str(d))[0] if isinstance(d, str)
                                        else d for d in batch_shape), dtype)
    return export.export(jax.jit(lambda v, x: portable.apply(v, x, train=False)))(
        variables, images)


def export_with_weights(model: ResNet, variables, batch_shape, dtype=jnp.float32,
                        platforms=None) -> export.Exported:
    """`images -> logits` with the weights inside the artifact (as constants): what a serving
    stack loads and calls with images alone. `batch_shape` as for `export_inference`;
    `platforms`: those it is lowered for (None: this machine's)."""
    portable = model.clone(kernels="xla")
    images = jax.ShapeDtypeStruct(tuple(export.symbolic_shape(str(d))[0] if isinstance(d, str)
                                        else d for d in batch_shape), dtype)
    constants = jax.tree_util.tree_map(jnp.asarray, variables)
    return export.export(jax.jit(lambda x: portable.apply(constants, x, train=False)),
                         platforms=platforms)(images)


# Lowered for every platform JAX runs ResNets on, whatever machine exports: an artifact made on a
# laptop runs on a GPU or TPU server (the network has no platform-specific operation).
JAX_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def write_jax(model: ResNet, variables, image_shape, path: str,
              platforms=JAX_PLATFORMS) -> dict:
    """`images -> logits` for any batch of NHWC float32 images of `image_shape`, weights inside
    (`export_with_weights`), lowered for `platforms`, serialised to `path`."""
    unknown = sorted(set(platforms) - set(JAX_PLATFORMS))
    if unknown or not platforms:
        raise UserError(f"--platforms must name some of {', '.join(JAX_PLATFORMS)}, got "
                        f"{', '.join(platforms) or 'none'}")
    exported = export_with_weights(model, variables, ("b", *image_shape),
                                   platforms=tuple(platforms))
    write_atomically(path, bytes(exported.serialize()))
    return {"layout": "NHWC", "shape": ["batch", *image_shape], "dtype": "float32",
            "platforms": list(exported.platforms), "jax_version": jax.__version__}


def version_tuple(text: str) -> tuple[int, ...]:
    """"0.12.1" -> (0, 12, 1): jax versions in the order JAX's compatibility promise uses."""
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def load_jax(path: str) -> export.Exported:
    """The `.jax` artifact at `path`, checked against this machine: UserError (one line) if
    it was made by a newer jax than this one (JAX loads artifacts of its own version and
    older, not newer), was not lowered for this platform, or is not an artifact at all."""
    import json

    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist")
    made_by = None
    if os.path.isfile(path + ".json"):
        with open(path + ".json") as f:
            made_by = json.load(f).get("input", {}).get("jax_version")
    if made_by and version_tuple(made_by) > version_tuple(jax.__version__):
        raise UserError(f"{path} was exported with jax {made_by}; this is jax {jax.__version__}"
                        f": JAX loads artifacts of its own version or older, not newer; "
                        f"upgrade jax here (pip install -U jax) or export with jax "
                        f"{jax.__version__}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        exported = export.deserialize(bytearray(data))
    except Exception as error:  # flatbuffers' and StableHLO's own errors: not one class
        raise UserError(f"{path} cannot be read as a jax.export artifact"
                        f"{' of jax ' + made_by if made_by else ''} by jax {jax.__version__}: "
                        f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
                        ) from None
    here = jax.default_backend()  # "gpu" for CUDA and ROCm alike
    lowered = {"cuda", "rocm"} if here == "gpu" else {here}
    if not lowered & set(exported.platforms):
        raise UserError(f"{path} was lowered for {', '.join(exported.platforms)}, not for "
                        f"this machine's {here}: export it again with --platforms including "
                        f"{here}")
    return exported


def torch_to_onnx(module, example, path: str, output_name: str) -> None:
    """`module`, a PyTorch network of NCHW float32 images, as ONNX at `path`: input "images"
    of any batch size, output `output_name`; torch.onnx's exporter from `torch.export` (the
    TorchScript one is deprecated). `example`: a tensor of the input's shape, batch >= 2."""
    import torch

    with warnings.catch_warnings(), _quiet_stdout():
        # torch.export's notes on the symbolic batch dimension, and the exporter's progress
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(module.eval(), (example,), path, dynamo=True, external_data=False,
                          input_names=["images"], output_names=[output_name],
                          dynamic_shapes=({0: torch.export.Dim.DYNAMIC},), verbose=False)


@contextlib.contextmanager
def _quiet_stdout():
    """The exporter prints its progress ("[torch.onnx] Obtain model graph ...") on stdout,
    which is the JSON answers' channel in the commands: sent to stderr instead."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _torch_twin(name: str, model: ResNet, variables):
    from resnet_jax.interop import torch_models, torchvision_weights

    num_classes = parts.num_classes(variables["params"])
    options = {"shortcut": model.shortcut} if is_cifar(name) else {}
    twin = torch_models.create_torch_model(name, num_classes=num_classes,
                                           in_channels=model.in_channels, **options)
    state_dict = torchvision_weights.to_torchvision(name, variables)
    hidden = None
    hidden_layer = parts.hidden_layer(variables["params"])
    if hidden_layer is not None:  # an MLP head: Linear, ReLU, then the classifier
        import torch

        width, hidden_width = hidden_layer["kernel"].shape
        hidden = torch.nn.Linear(width, hidden_width)
        hidden.load_state_dict({"weight": state_dict.pop(f"{parts.HIDDEN}.weight"),
                                "bias": state_dict.pop(f"{parts.HIDDEN}.bias")})
        twin.fc = torch.nn.Linear(hidden_width, num_classes)
    twin.load_state_dict(state_dict, strict=True)
    if hidden is not None:
        import torch

        twin.fc = torch.nn.Sequential(hidden, torch.nn.ReLU(), twin.fc)
    return twin.eval()


def write_onnx(name: str, model: ResNet, variables, image_shape, path: str) -> dict:
    """The model `name` as ONNX (input "images", float32 NCHW, any batch; output "logits"),
    exported from its PyTorch twin and kept only if onnxruntime's logits equal ours within
    ONNX_TOLERANCE (an AssertionError otherwise: the export would be wrong)."""
    import onnxruntime
    import torch

    height, width, channels = image_shape
    tmp = path + ".tmp"
    torch_to_onnx(_torch_twin(name, model, variables),
                  torch.zeros(2, channels, height, width), tmp, "logits")
    images = np.random.default_rng(0).standard_normal((3, *image_shape), dtype=np.float32)
    portable = model.clone(kernels="xla")
    ours = np.asarray(jax.jit(lambda v, x: portable.apply(v, x, train=False))(variables, images))
    session = onnxruntime.InferenceSession(tmp, providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"images": np.ascontiguousarray(images.transpose(0, 3, 1, 2))})[0]
    difference = float(np.max(np.abs(theirs - ours)) / max(np.max(np.abs(ours)), 1e-12))
    if not difference <= ONNX_TOLERANCE:
        os.remove(tmp)
        raise AssertionError(f"onnxruntime's logits differ from ours by {difference:.2e} "
                             f"(relative), more than {ONNX_TOLERANCE}: the export is wrong")
    os.replace(tmp, path)
    print(f"checked: onnxruntime's logits equal ours to {difference:.1e} (relative)")
    return {"layout": "NCHW", "shape": ["batch", channels, height, width], "dtype": "float32",
            "input_name": "images", "output_name": "logits"}


def write_torchvision(name: str, variables, image_shape, path: str) -> dict:
    """A state dict that torchvision's `name` (or, for the CIFAR family, this package's twin)
    loads with `strict=True`; the description says how."""
    import torch

    from resnet_jax.interop import torchvision_weights

    if parts.hidden_layer(variables["params"]) is not None:
        raise UserError("this model's head is an MLP (head='mlp'), and torchvision's ResNet has "
                        "a linear fc: export it with --format jax or --format onnx")
    buffer = io.BytesIO()
    torch.save(torchvision_weights.to_torchvision(name, variables), buffer)
    write_atomically(path, buffer.getvalue())
    height, width, channels = image_shape
    num_classes = parts.num_classes(variables["params"])
    load = (f"resnet_jax.interop.torch_models.create_torch_model({name!r}, "
            f"num_classes={num_classes})" if is_cifar(name) else
            f"torchvision.models.{name}(num_classes={num_classes})")
    return {"layout": "NCHW", "shape": ["batch", channels, height, width], "dtype": "float32",
            "load": f"{load}.load_state_dict(torch.load(PATH, weights_only=True))"}
