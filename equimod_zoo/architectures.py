"""CIFAR-stem ResNets registered as timm architectures, with the zoo's weights as pretrained tags.

The ImageNet-stem ResNets are stock timm (`resnet18`, `resnet50`). SimCLR and EquiMod train on
32 px CIFAR images with the stem of He et al.'s CIFAR networks: a 3x3 stride-1 conv1 and no
max-pool, so that layer1 still sees 32x32 maps. After `import equimod_zoo`,
`timm.create_model("resnet18_cifar")` builds one, and every available zoo entry on these
architectures is a timm pretrained tag: `timm.create_model("resnet18_cifar.simclr_equimod_cifar10",
pretrained=True)` loads that entry's weights (found and sha256-checked the way
`equimod_zoo.load` finds them), and `timm.list_pretrained("*_cifar*")` lists them. The tags come from literal data
(`equimod_zoo/pretrained_tags.py`, generated from the catalogue by `equimod-zoo model-cards`), so
importing reads no file; the catalogue is read only when weights are asked for.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from equimod_zoo.constants import CIFAR10_MEAN, CIFAR10_STD, CIFAR_ARCHITECTURES, PAPER_ID, WEIGHTS_FILE
from equimod_zoo.errors import UserError
from equimod_zoo.pretrained_tags import ZOO_TAGS
from equimod_zoo.registry import BUNDLED_MODELS_DIR, ZooEntry, catalogue

# The architecture alone names no weights: `arch.untrained` is the default tag, so a bare
# `resnet18_cifar` never silently means one particular zoo entry.
UNTRAINED_TAG = "untrained"


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
assert tuple(_ARCHITECTURES) == CIFAR_ARCHITECTURES


def _zoo_cfg(tag: dict[str, Any]) -> dict[str, Any]:
    """timm's pretrained cfg of a zoo tag (a row of ZOO_TAGS): headless weights, where they are, what they are."""
    if tag["folder"]:
        location = {"file": str(BUNDLED_MODELS_DIR / tag["folder"] / WEIGHTS_FILE)}
    elif tag["hf_hub_id"]:
        location = {"hf_hub_id": tag["hf_hub_id"]}
    else:
        location = {}
    return _cifar_cfg(**location, num_classes=0, license=tag["license"], paper_ids=PAPER_ID,
                      description=tag["description"])


# "*" marks the default tag; it comes last because timm puts a tag with weights first unless an
# explicit default follows it.
default_cfgs = generate_default_cfgs({
    **{name: _zoo_cfg(tag) for name, tag in ZOO_TAGS.items()},
    **{f"{name}.{UNTRAINED_TAG}*": _cifar_cfg() for name in _ARCHITECTURES},
})


def _create_cifar_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    entry = _zoo_entry(variant, kwargs.get("pretrained_cfg")) if pretrained else None
    if entry is None:  # no weights, or weights timm locates itself (local-dir:, an explicit cfg)
        return build_model_with_cfg(CifarResNet, variant, pretrained, **dict(_ARCHITECTURES[variant], **kwargs))
    from equimod_zoo.loading import load_verified_weights
    from equimod_zoo.weights import locate_weights

    located = locate_weights(entry.name)  # the same search and sha256 check as equimod_zoo.load
    model_args = dict(_ARCHITECTURES[variant], **located.config.model_args, **kwargs)
    model = build_model_with_cfg(CifarResNet, variant, False, **model_args)
    load_verified_weights(model, located)
    return model


def _zoo_entry(variant: str, pretrained_cfg: Any) -> ZooEntry | None:
    """The zoo entry whose weights `timm.create_model(variant.TAG, pretrained=True)` asks for."""
    if pretrained_cfg is not None and not isinstance(pretrained_cfg, str):
        return None
    tag = pretrained_cfg or UNTRAINED_TAG
    if tag == UNTRAINED_TAG:
        tagged = sorted(t for t in ZOO_TAGS if t.startswith(f"{variant}."))
        raise UserError(f"{variant} has no default weights; name them with a tag: {', '.join(tagged) or 'none yet'}"
                        f" (or pretrained=False)")
    row = ZOO_TAGS.get(f"{variant}.{tag}")
    return catalogue().get(row["entry"]) if row is not None else None


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
