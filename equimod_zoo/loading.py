"""`equimod_zoo.load`: a zoo name, alias or model folder in, a timm model out."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch

from equimod_zoo.devices import resolve_device
from equimod_zoo.model_folder import ModelConfig, default_pretrained_cfg
from equimod_zoo.errors import ModelFolderError
from equimod_zoo.registry import catalogue
from equimod_zoo.weights import LocatedWeights, check_dtypes, load_state_dict, local_folder, locate_weights

# timm's default config for an architecture describes timm's own weights; ours replace them.
_FORGET_TIMM_WEIGHTS = {"url": "", "hf_hub_id": None, "origin_url": None, "test_input_size": None,
                        "test_crop_pct": None, "license": None}


def load(
    name_or_path: str | Path,
    *,
    pretrained: bool = True,
    num_classes: int = 0,
    features_only: bool = False,
    device: str | torch.device | None = None,
    **timm_kwargs: Any,
) -> torch.nn.Module:
    """Build a zoo backbone as a timm model, with its weights and its data config.

    Args:
        name_or_path: a zoo name (`simclr_equimod_r18_cifar10`), an alias (`byol_equimod_r50`),
            an `arch.tag`, or a local model folder (config.json + model.safetensors).
        pretrained: load the weights; False builds the architecture with random weights,
            for recipe-only entries too.
        num_classes: 0 for a headless backbone that returns pooled features; otherwise a new,
            randomly initialised classifier.
        features_only: return timm's multi-scale feature extractor instead.
        device: where to put the model.
        **timm_kwargs: passed to `timm.create_model` (e.g. `drop_path_rate`).

    The returned model's `pretrained_cfg` holds the data config (mean, std, input size,
    interpolation, crop), so `timm.data.resolve_model_data_config(model)` is right.
    """
    if pretrained:
        return load_located(locate_weights(name_or_path), num_classes=num_classes, features_only=features_only,
                            device=device, **timm_kwargs)
    return _build(_config_of(name_or_path), None, num_classes=num_classes, features_only=features_only,
                  device=device, **timm_kwargs)


def load_located(located: LocatedWeights, *, num_classes: int = 0, features_only: bool = False,
                 device: str | torch.device | None = None, **timm_kwargs: Any) -> torch.nn.Module:
    """`load` for weights already found and verified by `locate_weights` (no second sha256 pass)."""
    return _build(located.config, located, num_classes=num_classes, features_only=features_only, device=device,
                  **timm_kwargs)


@dataclass
class ResolvedModel:
    """A model found and verified once (one sha256 pass) and built at most once, on first use.

    Commands that use one model several times (extract each split, transfer to each dataset)
    pass this around instead of the name, so nothing is located, hashed or built twice.
    """

    label: str  # how results name the model: a zoo name as given, a model folder by its folder name
    located: LocatedWeights
    _network: torch.nn.Module | None = field(default=None, init=False, repr=False)

    @property
    def weights_sha256(self) -> str:
        return self.located.sha256

    @property
    def network(self) -> torch.nn.Module:
        """The headless backbone (built on the first call, then the same module)."""
        if self._network is None:
            self._network = load_located(self.located)
        return self._network


def resolve_model(model: str | Path | ResolvedModel) -> ResolvedModel:
    """Locate and verify a zoo name, alias or model folder once; a `ResolvedModel` passes through."""
    if isinstance(model, ResolvedModel):
        return model
    folder = local_folder(model)
    given = Path(model).expanduser()
    name = (given if given.is_dir() else folder).resolve().name if folder is not None else str(model)  # RUN, not RUN/model
    return ResolvedModel(name, locate_weights(model))


def _build(config: ModelConfig, located: LocatedWeights | None, *, num_classes: int, features_only: bool,
           device: str | torch.device | None, **timm_kwargs: Any) -> torch.nn.Module:
    torch_device = resolve_device(device) if device is not None else None
    pretrained_cfg = dict(config.pretrained_cfg)
    if located is not None:
        pretrained_cfg["file"] = str(located.weights)
        pretrained_cfg["tag"] = _weights_tag(located)  # not the architecture's default `untrained`
    # config.model_args passed ModelConfig.read's checks; timm_kwargs come from the Python caller
    model = timm.create_model(
        config.architecture,
        pretrained=False,
        pretrained_cfg_overlay={**_FORGET_TIMM_WEIGHTS, **pretrained_cfg},
        **{**config.model_args, **timm_kwargs, "num_classes": num_classes, "features_only": features_only},
    )
    if located is not None:
        load_verified_weights(model, located)
    if torch_device is not None:
        model = model.to(torch_device)
    return model


def load_verified_weights(model: torch.nn.Module, located: LocatedWeights) -> None:
    """Load located (sha256-checked) weights into `model`: the backbone strictly; the file's classifier
    only when the model asks for one of the same size, else a new head (or none) replaces it."""
    state = load_state_dict(located)
    classifier = f"{located.config.pretrained_cfg.get('classifier', 'fc')}."
    stored_classes = located.config.num_classes
    if not (stored_classes and getattr(model, "num_classes", 0) == stored_classes):
        state = {k: v for k, v in state.items() if not k.startswith(classifier)}
    _load_backbone(model, located.weights, state, located.config.architecture)


def _weights_tag(located: LocatedWeights) -> str:
    """The timm tag of trained weights: the zoo entry's whose weights these are (found by sha256), else the
    model folder's name."""
    entry = next((e for e in catalogue().entries if e.sha256 == located.sha256), None)
    return entry.tag if entry is not None else located.weights.parent.name


def _config_of(name_or_path: str | Path) -> ModelConfig:
    folder = local_folder(name_or_path)
    if folder is not None:
        return ModelConfig.read(folder)
    entry = catalogue().get(str(name_or_path))
    pretrained_cfg = default_pretrained_cfg(entry.arch, tag=entry.tag)
    return ModelConfig(architecture=entry.arch, num_features=0, pretrained_cfg=pretrained_cfg)


def _load_backbone(model: torch.nn.Module, path: Path, state: dict[str, torch.Tensor], arch: str) -> None:
    """Load headless weights strictly: only a newly requested classifier may be missing."""
    check_dtypes(state, model, path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ModelFolderError(f"{path}: does not fit {arch}: {str(error).splitlines()[-1].strip()}") from None
    new_head = {k for k in missing if k.startswith(f"{model.pretrained_cfg.get('classifier', 'fc')}.")}
    if set(missing) - new_head or unexpected:
        raise ModelFolderError(
            f"{path}: does not fit {arch}: missing {sorted(set(missing) - new_head)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
