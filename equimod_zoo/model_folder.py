"""The model folder: timm's Hugging Face layout, shared by training export, hub and load.

    FOLDER/config.json                 timm schema; our metadata under the top-level "equimod" key
    FOLDER/model.safetensors           headless backbone, timm key names (fp32 or fp16)
    FOLDER/equimod_heads.safetensors   optional: the projection / parameter / predictor heads
    FOLDER/README.md                   optional: the model card

Plain timm loads such a folder with `timm.create_model("local-dir:FOLDER")` (after
`import equimod_zoo` for the CIFAR-stem architectures).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
import torch

from equimod_zoo.atomic import atomic_path, atomic_write_text

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HEADS_FILE = "equimod_heads.safetensors"
CARD_FILE = "README.md"
PAPER_ID = "arXiv:2211.01244"
_PRETRAINED_CFG_KEYS = (
    "input_size", "fixed_input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std",
    "pool_size", "first_conv", "classifier",
)


class ModelFolderError(ValueError):
    """A model folder that cannot be read: the message names the file and what is wrong."""


def sha256_file(path: str | Path, *, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_pretrained_cfg(arch: str, **overrides: Any) -> dict[str, Any]:
    """timm's default data config for `arch`, as it belongs in config.json's `pretrained_cfg`."""
    model = timm.create_model(arch, pretrained=False, num_classes=0)
    source = model.pretrained_cfg
    cfg = {key: _jsonable(source[key]) for key in _PRETRAINED_CFG_KEYS if key in source}
    cfg.update(num_classes=0, paper_ids=PAPER_ID)
    cfg.update(overrides)
    return cfg


@dataclass
class ModelConfig:
    """config.json of a model folder."""

    architecture: str
    num_features: int
    pretrained_cfg: dict[str, Any]
    global_pool: str = "avg"
    model_args: dict[str, Any] = field(default_factory=dict)  # constructor arguments, e.g. a reduced width
    equimod: dict[str, Any] = field(default_factory=dict)  # method, epochs, data, results, weights_sha256...

    def to_dict(self) -> dict[str, Any]:
        data = {
            "architecture": self.architecture,
            "num_classes": 0,
            "num_features": self.num_features,
            "global_pool": self.global_pool,
            "pretrained_cfg": self.pretrained_cfg,
            "equimod": self.equimod,
        }
        if self.model_args:
            data["model_args"] = self.model_args
        return data

    @classmethod
    def read(cls, folder: str | Path) -> ModelConfig:
        path = Path(folder) / CONFIG_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelFolderError(f"{path}: missing; a model folder needs {CONFIG_FILE} and {WEIGHTS_FILE}") from None
        except json.JSONDecodeError as error:
            raise ModelFolderError(f"{path}: not valid JSON ({error})") from None
        if "architecture" not in data:
            raise ModelFolderError(f"{path}: no 'architecture' key")
        return cls(
            architecture=data["architecture"],
            num_features=int(data.get("num_features", 0)),
            # timm's data config expects tuples where JSON stores lists
            pretrained_cfg={k: tuple(v) if isinstance(v, list) else v for k, v in data.get("pretrained_cfg", {}).items()},
            global_pool=data.get("global_pool", "avg"),
            model_args=dict(data.get("model_args", {})),
            equimod=dict(data.get("equimod", {})),
        )

    def write(self, folder: str | Path) -> None:
        atomic_write_text(Path(folder) / CONFIG_FILE, json.dumps(self.to_dict(), indent=2) + "\n")


def save_weights(state_dict: dict[str, torch.Tensor], path: str | Path, *, dtype: torch.dtype | None = None,
                 metadata: dict[str, str] | None = None) -> str:
    """Write a safetensors file atomically; floating tensors are cast to `dtype` if given. Returns its sha256."""
    tensors = {}
    for key, value in state_dict.items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata=metadata or {"format": "pt"})
    return sha256_file(path)


def weight_keys(path: str | Path) -> set[str]:
    """The tensor names in a safetensors file, read from its header only."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            return set(handle.keys())
    except Exception as error:  # safetensors raises several types for a corrupt header
        raise ModelFolderError(f"{path}: not a readable safetensors file ({error})") from None


def write_model_folder(folder: str | Path, backbone: torch.nn.Module, *, arch: str,
                       equimod: dict[str, Any] | None = None, heads: dict[str, torch.Tensor] | None = None,
                       dtype: torch.dtype | None = None, pretrained_cfg: dict[str, Any] | None = None,
                       model_args: dict[str, Any] | None = None) -> ModelConfig:
    """Export a headless backbone (and optionally its EquiMod heads) as a model folder."""
    folder = Path(folder)
    state = {k: v for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    sha = save_weights(state, folder / WEIGHTS_FILE, dtype=dtype)
    if heads:
        save_weights(heads, folder / HEADS_FILE, dtype=dtype)
    config = ModelConfig(
        architecture=arch,
        num_features=int(backbone.num_features),
        pretrained_cfg=pretrained_cfg or default_pretrained_cfg(arch),
        model_args={k: _jsonable(v) for k, v in (model_args or {}).items()},
        equimod={**(equimod or {}), "weights_sha256": sha},
    )
    config.write(folder)
    return config


def is_model_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
