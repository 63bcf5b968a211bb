"""The PyTorch side of every model in `resnet_jax.models.MODELS`.

torchvision's own model where torchvision has it; otherwise a small twin built from torchvision's
`ResNet` class (resnet200, plain18/34) or written here (the CIFAR family and its plain
counterparts, paper section 4.2). State-dict keys follow torchvision's naming throughout, so
`resnet_jax.interop.torchvision_weights` maps all of them the same way.

Imports torch: import this module only where torch is wanted (tests, benchmarks, interop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import resnet as tv_resnet

from resnet_jax import models


class PlainBasicBlock(tv_resnet.BasicBlock):
    """torchvision's BasicBlock without its shortcut (the paper's plain-18/34)."""

    def __init__(self, inplanes, planes, stride=1, downsample=None, *args, **kwargs):
        super().__init__(inplanes, planes, stride, None, *args, **kwargs)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)))


class CifarBasicBlock(nn.Module):
    """The CIFAR block: option A (zero-pad), B (projection) or None (plain) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str | None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = shortcut
        self.stride = stride
        self.extra = planes - in_planes
        if shortcut == "B" and (stride != 1 or in_planes != planes):
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        else:
            self.downsample = None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is None:
            return F.relu(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        elif self.stride != 1 or self.extra:
            identity = x[:, :, ::self.stride, ::self.stride]
            identity = F.pad(identity, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        else:
            identity = x
        return F.relu(out + identity)


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, shortcut: str | None = "A",
                 in_channels: int = 3, zero_init_residual: bool = False):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(CifarBasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():  # torchvision's init, as resnet_jax.models.layers follows it
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, CifarBasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _imagenet_twin(block, layers, num_classes, in_channels, zero_init_residual):
    model = tv_resnet.ResNet(block, layers, num_classes=num_classes,
                             zero_init_residual=zero_init_residual)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def create_torch_model(name: str, *, num_classes: int, in_channels: int = 3,
                       shortcut: str | None = "A", zero_init_residual: bool = False,
                       bn_momentum: float = 0.1, bn_epsilon: float = 1e-5) -> nn.Module:
    """The PyTorch model that `resnet_jax.models.create_model(name, ...)` equals, in float32."""
    models.check_model_name(name)
    if models.is_cifar(name):
        depth = int(name.removeprefix("resnet").removeprefix("plain"))
        model = CifarResNet(depth, num_classes, None if name.startswith("plain") else shortcut,
                            in_channels, zero_init_residual)
    elif name == "resnet200":
        model = _imagenet_twin(tv_resnet.Bottleneck, [3, 24, 36, 3], num_classes, in_channels,
                               zero_init_residual)
    elif name in ("plain18", "plain34"):
        layers = [2, 2, 2, 2] if name == "plain18" else [3, 4, 6, 3]
        model = _imagenet_twin(PlainBasicBlock, layers, num_classes, in_channels,
                               zero_init_residual)
    else:
        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes,
                                                  zero_init_residual=zero_init_residual)
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum, m.eps = bn_momentum, bn_epsilon
    return model
