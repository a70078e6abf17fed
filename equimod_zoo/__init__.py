"""equimod-zoo: self-supervised backbones that keep colour and pose, in timm format."""
from equimod_zoo import architectures as _architectures  # noqa: F401  registers resnet*_cifar with timm
from equimod_zoo.loading import load
from equimod_zoo.registry import ZooEntry, get_entry, list_models

__all__ = ["load", "list_models", "get_entry", "ZooEntry"]
__version__ = "0.1.0"
