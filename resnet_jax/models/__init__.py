"""ResNet model zoo in Flax Linen, numerically equal to torchvision. Plain Flax: the faster
kernels of other packages reach it only through `resnet_jax.models.kernels`.

    from resnet_jax.models import create_model
    model = create_model("resnet50", num_classes=1000)
"""

from resnet_jax.models.analysis import count_params, forward_macs, init_shapes
from resnet_jax.models.blocks import BasicBlock, Bottleneck
from resnet_jax.models.layers import BatchNorm
from resnet_jax.models.resnet import HEADS, FeatureInfo, ResNet, check_head
from resnet_jax.models.zoo import (
                                   MODEL_OPTIONS,
                                   MODELS,
                                   TORCHVISION_MODELS,
                                   check_model_name,
                                   create_model,
                                   default_image_size,
                                   is_cifar,
                                   stage_names,
)

__all__ = ["BasicBlock", "BatchNorm", "Bottleneck", "FeatureInfo", "MODELS", "MODEL_OPTIONS",
           "HEADS", "ResNet", "TORCHVISION_MODELS", "check_head", "check_model_name",
           "count_params", "create_model",
           "default_image_size", "forward_macs", "init_shapes", "is_cifar", "stage_names"]
