import timm
import torch

import equimod_zoo  # noqa: F401
from equimod_zoo.constants import CIFAR10_MEAN


def test_cifar_stem_keeps_32px_resolution_into_layer1():
    model = timm.create_model("resnet18_cifar", features_only=True, channels=(8, 16, 32, 64), stem_width=8)
    maps = model(torch.randn(1, 3, 32, 32))
    assert [m.shape[-1] for m in maps] == [32, 32, 16, 8, 4]
    assert model.feature_info.reduction() == [1, 1, 2, 4, 8]
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)


def test_cifar_arch_has_cifar_data_config():
    model = timm.create_model("resnet50_cifar", num_classes=0)
    cfg = timm.data.resolve_model_data_config(model)
    assert cfg["input_size"] == (3, 32, 32)
    assert tuple(cfg["mean"]) == CIFAR10_MEAN
    assert model.num_features == 2048


def test_stock_timm_names_are_untouched():
    model = timm.create_model("resnet18", num_classes=0)
    assert model.conv1.kernel_size == (7, 7)
    assert isinstance(model.maxpool, torch.nn.MaxPool2d)
