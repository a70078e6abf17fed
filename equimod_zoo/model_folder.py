"""The model folder: timm's Hugging Face layout, shared by training export, hub and load.

    FOLDER/config.json                 timm schema; our metadata under the top-level "equimod" key
                                       (a `ModelMetadata`, equimod_zoo/model_metadata.py)
    FOLDER/model.safetensors           headless backbone, timm key names (fp32 or fp16)
    FOLDER/equimod_heads.safetensors   optional: the projection / parameter / predictor heads
    FOLDER/README.md                   optional: the model card

Plain timm loads such a folder with `timm.create_model("local-dir:FOLDER")` (after
`import equimod_zoo` for the CIFAR-stem architectures).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
import torch
from timm.models import PretrainedCfg, get_pretrained_cfg, is_model_in_modules

from equimod_zoo.atomic import atomic_path, atomic_write_text
from equimod_zoo.constants import CONFIG_FILE, HEADS_FILE, METADATA_KEY, PAPER_ID, WEIGHTS_FILE
from equimod_zoo.errors import ModelFolderError, UserError
from equimod_zoo.json_file import read_json
from equimod_zoo.limits import (MAX_BLOCKS_PER_STAGE, MAX_INPUT_CHANNELS, MAX_MODEL_PARAMETERS, MIN_NORMALIZE_STD,
                                check_limit, check_resolution)
from equimod_zoo.model_metadata import ModelMetadata

_PRETRAINED_CFG_KEYS = (
    "input_size", "fixed_input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std",
    "pool_size", "first_conv", "classifier",
)


# What config.json (or a recipe) may ask of the constructor, per timm model family: the JSON-valued
# arguments of that family's class, each with the check its value must pass and its stated bound.
# Nothing else reaches `timm.create_model`: `checkpoint_path`, `pretrained_cfg`, `cache_dir`... would
# make a config file read other files or reach the network. An architecture of another family
# takes only the arguments every timm model takes (`ANY_MODEL_ARGS`). What the sizes add up to is
# bounded as a whole, by counting the parameters of the model they describe (`check_model_size`).
ArgCheck = tuple[Callable[[Any], bool], str]  # (valid(value), what a valid value is)


def _integer(low: int, high: int) -> ArgCheck:
    return ((lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high),
            f"a positive integer (at most {high})" if low == 1 else f"an integer from {low} to {high}")


def _number(low: float, high: float, *, closed: bool = True) -> ArgCheck:
    return ((lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
             and low <= v and (v <= high if closed else v < high)),
            f"a number in [{low}, {high}{']' if closed else ')'}")


def _integers(count: int, low: int, high: int) -> ArgCheck:
    valid = _integer(low, high)[0]
    return ((lambda v: isinstance(v, (list, tuple)) and len(v) == count and all(valid(c) for c in v)),
            f"{count} integers from {low} to {high}")


def _one_of(*values: Any) -> ArgCheck:
    return (lambda v: any(v == option and type(v) is type(option) for option in values),
            " or ".join(repr(v) for v in values))


def _optional(check: ArgCheck) -> ArgCheck:
    return (lambda v: v is None or check[0](v)), f"null or {check[1]}"


_BOOL: ArgCheck = ((lambda v: isinstance(v, bool)), "true or false")
_WIDTH = _integer(1, 65536)
_FRACTION = _number(0, 1, closed=False)
_POOLS = ("", "avg", "max", "avgmax", "catavgmax")
ANY_MODEL_ARGS: dict[str, ArgCheck] = {
    "num_classes": _integer(0, 1_000_000),
    "in_chans": _integer(1, MAX_INPUT_CHANNELS),
}
MODEL_ARGS: dict[str, dict[str, ArgCheck]] = {
    "resnet": {  # timm's ResNet, and our CIFAR-stem ResNets (equimod_zoo.architectures)
        **ANY_MODEL_ARGS,
        "channels": (_integers(4, 1, 65536)[0], "four positive integers (at most 65536)"),
        "layers": (_integers(4, 1, MAX_BLOCKS_PER_STAGE)[0],
                   f"four positive integers up to {MAX_BLOCKS_PER_STAGE} (blocks per stage, equimod_zoo.limits)"),
        "stem_width": _WIDTH,
        "stem_type": _one_of("", "deep", "deep_tiered"),
        "global_pool": _one_of(*_POOLS),
        "output_stride": _one_of(8, 16, 32),
        "cardinality": _integer(1, 1024),
        "base_width": _WIDTH,
        "down_kernel_size": _integer(1, 15),
        "block_reduce_first": _integer(1, 64),
        "avg_down": _BOOL,
        "replace_stem_pool": _BOOL,
        "zero_init_last": _BOOL,
        "drop_rate": _FRACTION,
        "drop_path_rate": _FRACTION,
        "drop_block_rate": _FRACTION,
    },
    "convnext": {  # timm's ConvNeXt
        **ANY_MODEL_ARGS,
        "depths": _integers(4, 1, MAX_BLOCKS_PER_STAGE),
        "dims": _integers(4, 1, 65536),
        "kernel_sizes": ((lambda v: _integer(1, 31)[0](v) or _integers(4, 1, 31)[0](v)),
                         "an integer from 1 to 31, or 4 of them"),
        "patch_size": _integer(1, 64),
        "stem_type": _one_of("patch", "overlap", "overlap_tiered", "overlap_act"),
        "ls_init_value": _optional(_number(0, 10)),
        "conv_mlp": _BOOL,
        "conv_bias": _BOOL,
        "use_grn": _BOOL,
        "head_norm_first": _BOOL,
        "global_pool": _one_of(*_POOLS),
        "output_stride": _one_of(8, 16, 32),
        "drop_rate": _FRACTION,
        "drop_path_rate": _FRACTION,
    },
    "vision_transformer": {  # timm's VisionTransformer
        **ANY_MODEL_ARGS,
        "img_size": _integer(1, 4096),
        "patch_size": _integer(1, 256),
        "embed_dim": _WIDTH,
        "depth": _integer(1, MAX_BLOCKS_PER_STAGE),
        "num_heads": _integer(1, 1024),
        "mlp_ratio": _number(0, 64),
        "qkv_bias": _BOOL,
        "qk_norm": _BOOL,
        "init_values": _optional(_number(0, 10)),
        "class_token": _BOOL,
        "no_embed_class": _BOOL,
        "reg_tokens": _integer(0, 256),
        "pre_norm": _BOOL,
        "fc_norm": _optional(_BOOL),
        "dynamic_img_size": _BOOL,
        "global_pool": _one_of("", "avg", "avgmax", "max", "token", "map"),
        "drop_rate": _FRACTION,
        "pos_drop_rate": _FRACTION,
        "proj_drop_rate": _FRACTION,
        "attn_drop_rate": _FRACTION,
        "drop_path_rate": _FRACTION,
    },
}
# timm's module of an architecture -> the family whose arguments it takes (`register_model` files an
# architecture under its module's last name: our CIFAR-stem ResNets under `architectures`).
FAMILY_OF_MODULE = {"resnet": "resnet", "architectures": "resnet", "convnext": "convnext",
                    "vision_transformer": "vision_transformer"}


def family_of(arch: str) -> str | None:
    """The `MODEL_ARGS` family of a registered timm architecture, or None for any other."""
    return next((family for module, family in FAMILY_OF_MODULE.items() if is_model_in_modules(arch, [module])), None)


def model_args_of(arch: str) -> dict[str, ArgCheck]:
    """The constructor arguments config.json may give `arch` (a registered timm name), with their checks."""
    family = family_of(arch)
    return MODEL_ARGS[family] if family is not None else ANY_MODEL_ARGS


# pretrained_cfg fields that say where weights are: a config file never decides that.
_LOCATION_KEYS = ("url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source")
_PRETRAINED_CFG_FIELDS = {f.name for f in dataclasses.fields(PretrainedCfg)} - set(_LOCATION_KEYS)
_ARCH_NAME = re.compile(r"[a-z][a-z0-9_]*")



def sha256_file(path: str | Path, *, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_pretrained_cfg(arch: str, **overrides: Any) -> dict[str, Any]:
    """timm's default data config for `arch`, as it belongs in config.json's `pretrained_cfg`."""
    source = get_pretrained_cfg(arch)
    if source is None:
        raise ModelFolderError(f"{arch!r}: no such timm architecture")
    source = source.to_dict()
    cfg = {key: _jsonable(source[key]) for key in _PRETRAINED_CFG_KEYS if source.get(key) is not None}
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
    equimod: ModelMetadata = field(default_factory=ModelMetadata)  # how the weights were made
    num_classes: int = 0  # the classifier in the weights file (0: headless, as our exports are)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "architecture": self.architecture,
            "num_classes": self.num_classes,
            "num_features": self.num_features,
            "global_pool": self.global_pool,
            "pretrained_cfg": self.pretrained_cfg,
            METADATA_KEY: self.equimod.to_dict(),
        }
        if self.model_args:
            data["model_args"] = self.model_args
        return data

    @classmethod
    def read(cls, folder: str | Path) -> ModelConfig:
        path = Path(folder) / CONFIG_FILE
        try:
            data = read_json(path, error=ModelFolderError)
        except FileNotFoundError:
            raise ModelFolderError(f"{path}: missing; a model folder needs {CONFIG_FILE} and {WEIGHTS_FILE}") from None
        architecture = check_architecture(data.get("architecture"), path)
        model_args = _checked_model_args(data.get("model_args", {}), path, architecture)
        # timm's save_for_hf records the head and the pooling among the constructor arguments too
        num_classes = model_args.pop("num_classes", data.get("num_classes", 0))
        if not ANY_MODEL_ARGS["num_classes"][0](num_classes):
            raise ModelFolderError(f"{path}: num_classes {num_classes!r} is not {ANY_MODEL_ARGS['num_classes'][1]}")
        try:
            equimod = ModelMetadata.from_dict(data.get(METADATA_KEY) or {}, source=str(path))
        except UserError as error:
            raise ModelFolderError(str(error)) from None
        num_features = data.get("num_features") or 0
        if not isinstance(num_features, int) or num_features < 0:
            raise ModelFolderError(f"{path}: num_features {num_features!r} is not a non-negative integer")
        check_model_size(architecture, model_args, where=f"{path}: {architecture} with these model_args",
                         num_classes=num_classes)
        return cls(
            architecture=architecture,
            num_features=num_features,
            pretrained_cfg=_checked_pretrained_cfg(data.get("pretrained_cfg", {}), path),
            global_pool=str(model_args.get("global_pool", data.get("global_pool", "avg"))),
            model_args=model_args,
            equimod=equimod,
            num_classes=num_classes,
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
                       equimod: ModelMetadata | Mapping[str, Any] | None = None,
                       heads: dict[str, torch.Tensor] | None = None,
                       dtype: torch.dtype | None = None, pretrained_cfg: dict[str, Any] | None = None,
                       model_args: dict[str, Any] | None = None) -> ModelConfig:
    """Export a headless backbone (and optionally its EquiMod heads) as a model folder.

    `equimod` is the metadata config.json records (a `ModelMetadata`, or its dict form).
    """
    folder = Path(folder)
    if not isinstance(equimod, ModelMetadata):
        equimod = ModelMetadata.from_dict(equimod or {}, source="write_model_folder(equimod=...)")
    state = {k: v for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    sha = save_weights(state, folder / WEIGHTS_FILE, dtype=dtype)
    if heads:
        save_weights(heads, folder / HEADS_FILE, dtype=dtype)
    config = ModelConfig(
        architecture=arch,
        num_features=int(backbone.num_features),
        global_pool=pool_type(backbone),
        pretrained_cfg=pretrained_cfg or default_pretrained_cfg(arch),
        model_args={k: _jsonable(v) for k, v in (model_args or {}).items()},
        equimod=equimod.replace(weights_sha256=sha),
    )
    config.write(folder)
    return config


def pool_type(backbone: torch.nn.Module) -> str:
    """How a timm backbone pools its features ("avg" for ResNets and ConvNeXts, "token" for ViTs): timm keeps
    the pooling on the model's head or on the model itself."""
    for owner in (getattr(backbone, "head", None), backbone):
        pool = getattr(owner, "global_pool", None)
        pool = getattr(pool, "pool_type", pool)
        if isinstance(pool, str):
            return pool
    return "avg"


def is_model_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def check_architecture(arch: Any, where: str | Path) -> str:
    """A registered timm architecture name: never a `local-dir:` or `hf-hub:` source, never a path."""
    path = where
    if arch is None:
        raise ModelFolderError(f"{path}: no 'architecture' key")
    if not isinstance(arch, str) or not _ARCH_NAME.fullmatch(arch) or not timm.is_model(arch):
        raise ModelFolderError(f"{path}: architecture {arch!r} is not a registered timm architecture name "
                               f"(e.g. resnet18_cifar, resnet50)")
    return arch


def check_model_args(model_args: Any, where: str | Path, *, arch: str) -> dict[str, Any]:
    """Constructor arguments a config or a user gives `arch`: only its family's (`model_args_of`), each valid.

    Returns them with JSON lists as tuples; raises ModelFolderError naming `where` and the key.
    """
    return _checked_model_args(model_args, where, arch)


def check_model_size(architecture: str, model_args: dict[str, Any], *, where: str, num_classes: int = 0) -> int:
    """Count the parameters `architecture` with `model_args` would have, refusing more than MAX_MODEL_PARAMETERS.

    The model is built on the meta device (shapes, no memory), so a config asking for 155 GB of
    weights is refused before a byte is allocated. `model_args` must have passed `check_model_args`
    (blocks per stage are bounded: each is built, even on the meta device). Returns the count.
    """
    count = _parameter_count(architecture, tuple(sorted(model_args.items())), num_classes)
    check_limit(where, count, MAX_MODEL_PARAMETERS, unit="parameters")
    return count


@functools.lru_cache(maxsize=64)
def _parameter_count(architecture: str, model_args: tuple[tuple[str, Any], ...], num_classes: int) -> int:
    with torch.device("meta"):
        model = timm.create_model(architecture, pretrained=False, **dict(model_args), num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


def _checked_model_args(model_args: Any, path: str | Path, arch: str) -> dict[str, Any]:
    if not isinstance(model_args, dict):
        raise ModelFolderError(f"{path}: model_args must be an object, found {type(model_args).__name__}")
    accepted = model_args_of(arch)
    checked = {}
    for key, value in model_args.items():
        if key not in accepted:
            raise ModelFolderError(f"{path}: model_args {key!r} is not a constructor argument equimod-zoo accepts "
                                   f"for {arch} ({', '.join(accepted)})")
        valid, expected = accepted[key]
        if not valid(value):
            raise ModelFolderError(f"{path}: model_args {key} = {value!r} is not {expected}")
        checked[key] = tuple(value) if isinstance(value, list) else value
    return checked


def _checked_pretrained_cfg(cfg: Any, path: Path) -> dict[str, Any]:
    """The data config of config.json: timm's fields with sane values; where weights live is dropped."""
    if not isinstance(cfg, dict):
        raise ModelFolderError(f"{path}: pretrained_cfg must be an object, found {type(cfg).__name__}")
    # timm's data config expects tuples where JSON stores lists
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in _PRETRAINED_CFG_FIELDS}
    for key in ("input_size", "test_input_size", "min_input_size"):
        size = cfg.get(key)
        if size is not None and not (isinstance(size, tuple) and len(size) == 3
                                     and all(_WIDTH[0](v) for v in size)):
            raise ModelFolderError(f"{path}: pretrained_cfg {key} {size!r} is not [channels, height, width]")
        if size is not None:
            check_limit(f"{path}: pretrained_cfg {key} channels", size[0], MAX_INPUT_CHANNELS)
            check_resolution(f"{path}: pretrained_cfg {key}", max(size[1:]))
    for key in ("mean", "std"):
        value = cfg.get(key)
        if value is not None and not (isinstance(value, tuple) and value and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
            raise ModelFolderError(f"{path}: pretrained_cfg {key} {value!r} is not a list of numbers")
    if cfg.get("std") is not None and any(v < MIN_NORMALIZE_STD for v in cfg["std"]):
        raise ModelFolderError(f"{path}: pretrained_cfg std {list(cfg['std'])} has a value below the limit of "
                               f"{MIN_NORMALIZE_STD:g} (equimod_zoo.limits): dividing pixels by it gives inf features")
    if cfg.get("mean") is not None and any(not 0 <= v <= 1 for v in cfg["mean"]):
        raise ModelFolderError(f"{path}: pretrained_cfg mean {list(cfg['mean'])} is not in [0, 1], the range of "
                               f"the pixels it is subtracted from")
    for key in ("crop_pct", "test_crop_pct"):
        value = cfg.get(key)
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and 0 < value <= 4):
            raise ModelFolderError(f"{path}: pretrained_cfg {key} {value!r} is not a number in (0, 4]")
    if cfg.get("input_size") is not None:  # the resize before the centre crop: a crop_pct of 1e-9 asks for 224 Gpx
        check_resolution(f"{path}: pretrained_cfg input_size", max(cfg["input_size"][1:]), crop_pct=cfg.get("crop_pct"))
    if cfg.get("interpolation") not in (None, "", "nearest", "bilinear", "bicubic", "lanczos", "box", "hamming",
                                        "random"):
        raise ModelFolderError(f"{path}: pretrained_cfg interpolation {cfg['interpolation']!r} is not one of "
                               f"bilinear, bicubic, nearest, lanczos, box, hamming")
    if cfg.get("crop_mode") not in (None, "center", "squash", "border"):
        raise ModelFolderError(f"{path}: pretrained_cfg crop_mode {cfg['crop_mode']!r} is not center, squash or "
                               f"border")
    return cfg


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
