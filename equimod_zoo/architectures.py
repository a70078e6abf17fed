"""CIFAR-stem ResNets registered as timm architectures.

The ImageNet-stem ResNets are stock timm (`resnet18`, `resnet50`). SimCLR and EquiMod train on
32 px CIFAR images with the stem of He et al.'s CIFAR networks: a 3x3 stride-1 conv1 and no
max-pool, so that layer1 still sees 32x32 maps. After `import equimod_zoo`,
`timm.create_model("resnet18_cifar")` builds one.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn
from timm.models import build_model_with_cfg, is_model, register_model
from timm.models._registry import generate_default_cfgs
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class CifarResNet(ResNet):
    """timm's ResNet with the CIFAR stem: conv1 3x3 stride 1, no max-pool."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        in_chans = self.conv1.in_channels
        stem_width = self.conv1.out_channels
        self.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
        self.maxpool = nn.Identity()
        # The stem no longer downsamples: every feature map is 4x larger than on ImageNet.
        for info in self.feature_info:
            info["reduction"] = max(1, info["reduction"] // 4)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")


def _cifar_cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 32, 32),
        "pool_size": (4, 4),
        "crop_pct": 1.0,
        "crop_mode": "center",
        "interpolation": "bicubic",
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        **kwargs,
    }


_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "resnet18_cifar": dict(block=BasicBlock, layers=(2, 2, 2, 2)),
    "resnet50_cifar": dict(block=Bottleneck, layers=(3, 4, 6, 3)),
}

default_cfgs = generate_default_cfgs({f"{name}.untrained": _cifar_cfg() for name in _ARCHITECTURES})


def _create_cifar_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    model_args = dict(_ARCHITECTURES[variant], **kwargs)
    return build_model_with_cfg(CifarResNet, variant, pretrained, **model_args)


def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-18 with the CIFAR stem (3x3 stride-1 conv1, no max-pool)."""
    return _create_cifar_resnet("resnet18_cifar", pretrained, **kwargs)


def resnet50_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-50 with the CIFAR stem (3x3 stride-1 conv1, no max-pool)."""
    return _create_cifar_resnet("resnet50_cifar", pretrained, **kwargs)


# Registering twice would make timm warn and replace an entry point; never shadow a timm name.
for _entrypoint in (resnet18_cifar, resnet50_cifar):
    if not is_model(_entrypoint.__name__):
        register_model(_entrypoint)

CIFAR_ARCHITECTURES = tuple(_ARCHITECTURES)
