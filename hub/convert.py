"""Convert a foreign ResNet checkpoint into a zoo model folder that `equimod_zoo.load` reads.

Checkpoints are read with `torch.load(weights_only=True)` only (or as safetensors): a pickle that
needs arbitrary code is refused, never run. Each source layout is data: where its state dict
sits, which key prefix holds the backbone, which prefixes are EquiMod heads, and how numeric
`nn.Sequential` indices name ResNet children. The backbone uses torchvision's ResNet names,
which are timm's; its architecture (stem, block type, depth, widths) is read from the shapes.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
import torch

import equimod_zoo  # also registers the CIFAR-stem architectures with timm
from equimod_zoo.atomic import move_into_place, staging_dir
from equimod_zoo.constants import CONFIG_FILE, HEADS_FILE, WEIGHTS_FILE
from equimod_zoo.errors import UserError
from equimod_zoo.hub.staging import check_output
from equimod_zoo.limits import MAX_CHECKPOINT_BYTES, check_limit
from equimod_zoo.method import Method
from equimod_zoo.model_folder import (check_architecture, check_model_args, check_model_size, sha256_file,
                                      write_model_folder)
from equimod_zoo.model_metadata import ConvertedFrom, ModelMetadata
from equimod_zoo.weights import check_dtypes


@dataclass(frozen=True)
class CheckpointLayout:
    """Where a framework keeps the backbone inside its checkpoints."""

    containers: tuple[str, ...]  # keys that may wrap the state dict, tried in order
    backbone_prefix: str  # the backbone's keys start with this (after any `module.`)
    head_prefixes: tuple[str, ...] = ()  # kept in equimod_heads.safetensors
    children: dict[str, str] | None = None  # numeric nn.Sequential index -> ResNet child name
    method: str | None = None  # the method every checkpoint of this layout was trained with, if any


# torchvision's ResNet children, in order, as `nn.Sequential(*list(resnet.children())[:-1])` numbers them
TORCHVISION_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}

LAYOUTS = {
    # The authors' EquiMod code: {"model": {"resnet.*", heads...}, "momentum_model": ... (BYOL)}
    "equimod-official": CheckpointLayout(
        containers=("model",),
        backbone_prefix="resnet.",
        head_prefixes=("proj_head_inv.", "proj_head_eq.", "proj_head_t.", "predictor_eq.", "predictor_inv."),
    ),
    "solo-learn": CheckpointLayout(containers=("state_dict",), backbone_prefix="backbone."),
    "lightly": CheckpointLayout(containers=("state_dict", "model"), backbone_prefix="backbone.",
                                children=TORCHVISION_CHILDREN),
    "torchvision": CheckpointLayout(containers=("state_dict", "model"), backbone_prefix=""),
}

CLASSIFIER_PREFIX = "fc."
WRITTEN_BY = "convert"  # config.json's equimod.written_by: marks a folder --overwrite may replace
CONVERT_FILES = (CONFIG_FILE, WEIGHTS_FILE, HEADS_FILE)
# (block, blocks per stage) -> timm architecture, for each stem
_DEPTHS = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}
_DEFAULT_CHANNELS = (64, 128, 256, 512)


@dataclass(frozen=True)
class ConversionReport:
    folder: Path
    arch: str
    model_args: dict[str, Any]
    weights_sha256: str
    backbone_keys: int
    head_keys: int
    ignored_keys: tuple[str, ...]  # outside the backbone and the heads (projectors, momentum encoder...)


def read_checkpoint(path: str | Path, *, max_bytes: int = MAX_CHECKPOINT_BYTES) -> dict[str, Any]:
    """A checkpoint's contents: safetensors, or a torch pickle of plain tensors and containers only.

    A torch checkpoint must be a zip archive (torch.save's format since torch 1.6) whose tensors
    total at most `max_bytes` once inflated; the sizes are read from the archive's directory
    before anything is inflated. The older, non-zip format is refused: its tensor sizes are only
    known while they are being allocated. The shapes the tensors claim count too: a view of four
    bytes of storage may claim [65536, 65536, 3, 3], which copying or building a model from would
    allocate.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file, not a checkpoint")
    if path.suffix == ".safetensors":
        check_limit(str(path), path.stat().st_size, max_bytes, unit="bytes")
        try:
            content = safetensors.torch.load_file(str(path))
        except Exception as error:  # safetensors raises several types for a corrupt file
            raise UserError(f"{path}: not a readable safetensors file ({error})") from None
        _check_claimed_size(content, path, max_bytes)
        return content
    _check_inflated_size(path, max_bytes)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0]
        raise UserError(f"{path}: refused: it holds objects that only arbitrary code could rebuild, and "
                        f"checkpoints are read with weights_only=True ({reason})") from None
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError, zipfile.BadZipFile) as error:
        # torch.load's failures on a damaged archive are as varied as the damage
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"{path}: not a readable torch checkpoint ({type(error).__name__}: {reason})") from None
    if not isinstance(content, dict):
        raise UserError(f"{path}: expected a dict checkpoint, found {type(content).__name__}")
    _check_claimed_size(content, path, max_bytes)
    return content


def _check_claimed_size(content: Any, path: Path, max_bytes: int) -> None:
    """The bytes the checkpoint's tensors claim by their shapes, whatever storage backs them."""
    claimed, stack = 0, [content]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            claimed += item.numel() * item.element_size()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    check_limit(f"{path}: the shapes of its tensors", claimed, max_bytes, unit="bytes")


def _check_inflated_size(path: Path, max_bytes: int) -> None:
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a torch checkpoint in torch.save's zip format (a text file, a damaged file, "
                        f"or the pre-1.6 format, whose tensor sizes cannot be checked before they are allocated: "
                        f"re-save it with torch.save, or as safetensors)")
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as error:
        raise UserError(f"{path}: not a readable torch checkpoint ({error})") from None
    if inflated > max_bytes:
        raise UserError(f"{path}: its tensors would take {inflated / 2**30:.1f} GiB once inflated, over the "
                        f"{max_bytes / 2**30:.1f} GiB limit for a checkpoint; refused before inflating")


def check_finite(tensors: dict[str, torch.Tensor], path: Path | str) -> None:
    """Refuse weights holding NaN or inf: they would give non-finite features to every user."""
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise UserError(f"{path}: tensor {key!r} holds NaN or inf values; refusing to convert it")


def split_checkpoint(content: dict[str, Any], layout: CheckpointLayout, *, path: Path | str = "checkpoint",
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """(backbone with timm keys, heads, ignored keys) of a checkpoint in `layout`."""
    state = _state_dict(content, layout, path)
    backbone: dict[str, torch.Tensor] = {}
    heads: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in state.items():
        name = key.removeprefix("module.")
        if any(name.startswith(p) for p in layout.head_prefixes):
            heads[name] = value
            continue
        inner = _strip_backbone_prefix(name, layout.backbone_prefix)
        if inner is None or inner.startswith(CLASSIFIER_PREFIX):
            ignored.append(key)
            continue
        if layout.children:
            first, _, rest = inner.partition(".")
            inner = f"{layout.children.get(first, first)}.{rest}" if rest else inner
        backbone[inner] = value
    if not backbone:
        raise UserError(f"{path}: no backbone keys (expected keys starting with "
                        f"{layout.backbone_prefix or 'conv1.'!r}); is --from right?")
    return backbone, heads, ignored


def detect_architecture(backbone: dict[str, torch.Tensor], *, path: Path | str = "checkpoint",
                        ) -> tuple[str, dict[str, Any]]:
    """The timm architecture and constructor arguments that fit a ResNet backbone's keys and shapes."""
    conv1 = backbone.get("conv1.weight")
    if conv1 is None or conv1.ndim != 4:
        raise UserError(f"{path}: no conv1.weight in the backbone; not a ResNet checkpoint, or the wrong --from")
    block = "bottleneck" if "layer1.0.conv3.weight" in backbone else "basic"
    counts = []
    for stage in range(1, 5):
        indices = {int(m.group(1)) for k in backbone if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        counts.append(max(indices) + 1 if indices else 0)
    depth = _DEPTHS.get((block, tuple(counts)))
    if depth is None:
        raise UserError(f"{path}: a ResNet with {block} blocks {tuple(counts)} per stage matches no known depth; "
                        "pass --arch")
    cifar = conv1.shape[-1] == 3
    arch = f"{depth}_cifar" if cifar else depth
    if not timm.is_model(arch):
        raise UserError(f"{path}: a CIFAR-stem {depth} is not an available architecture; pass --arch")
    return arch, infer_model_args(backbone, path=path)


def infer_model_args(backbone: dict[str, torch.Tensor], *, path: Path | str = "checkpoint") -> dict[str, Any]:
    """Per-stage `channels` that differ from the standard ResNet's, read from each stage's first conv."""
    stem = int(backbone["conv1.weight"].shape[0])
    if stem != 64:  # timm's single-conv stem always has 64 channels (stem_width only shapes deep stems)
        raise UserError(f"{path}: conv1 has {stem} output channels; timm's ResNet stem has 64, so this "
                        "backbone has no timm architecture")
    channels = tuple(int(backbone[f"layer{s}.0.conv1.weight"].shape[0]) for s in range(1, 5)
                     if f"layer{s}.0.conv1.weight" in backbone)
    return {"channels": channels} if len(channels) == 4 and channels != _DEFAULT_CHANNELS else {}


def convert_checkpoint(
    checkpoint: str | Path,
    *,
    source: str,
    out: str | Path,
    arch: str | None = None,
    model_args: dict[str, Any] | None = None,
    method: str | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> ConversionReport:
    """Turn a checkpoint from `source` (a LAYOUTS name) into a model folder at `out`.

    Args:
        checkpoint: a .pt/.pth/.ckpt (torch pickle of tensors) or .safetensors file.
        source: "equimod-official", "solo-learn", "lightly" or "torchvision".
        out: the model folder to create.
        arch: the timm architecture; detected from the weights when None.
        model_args: constructor arguments; inferred from the weights' widths when None.
        method: the pre-training method recorded in the metadata (a `Method` name: simclr_equimod...);
            detected for the official EquiMod checkpoints.
        dtype: store the weights in this precision; None keeps float32.
        overwrite: replace an existing `out` that an earlier conversion wrote; anything else is refused.
    """
    if source not in LAYOUTS:
        raise UserError(f"--from {source!r}: expected one of {', '.join(LAYOUTS)}")
    if model_args is not None and arch is not None:
        model_args = check_model_args(model_args, "--model-args", arch=check_architecture(arch, "--arch"))
    parsed_method = None
    if method is not None:
        try:
            parsed_method = Method.parse(method)
        except UserError as error:
            raise UserError(f"--method: {error}") from None
    path, out = Path(checkpoint), Path(out)
    check_output(out, kind=WRITTEN_BY, files=CONVERT_FILES, sources=[path], overwrite=overwrite)
    layout = LAYOUTS[source]
    content = read_checkpoint(path)
    backbone, heads, ignored = split_checkpoint(content, layout, path=path)
    check_finite({**backbone, **heads}, path)
    detected_arch, detected_args = detect_architecture(backbone, path=path) if arch is None or model_args is None \
        else (arch, model_args)
    arch = arch or detected_arch
    if not timm.is_model(arch):
        raise UserError(f"--arch {arch!r}: not a timm architecture")
    # widths given or read from the checkpoint's shapes are sizes from outside too
    model_args = check_model_args(detected_args if model_args is None else model_args, path, arch=arch)
    check_model_size(arch, model_args, where=f"{path}: a {arch} with {_plain_args(model_args)}")
    model = timm.create_model(arch, pretrained=False, num_classes=0, **model_args).eval()
    _load_strict(model, backbone, arch, path)
    detected_method = _official_method(content, source)
    equimod = ModelMetadata(
        converted_from=ConvertedFrom(file=path.name, format=source, sha256=sha256_file(path)),
        method=parsed_method or (Method.parse(detected_method) if detected_method else None),
        epochs=content["epoch"] if isinstance(content.get("epoch"), int) else None,
        written_by=WRITTEN_BY,
    )
    with staging_dir(out) as stage:
        config = write_model_folder(stage, model, arch=arch, equimod=equimod, heads=heads or None, dtype=dtype,
                                    model_args=model_args)
        reloaded = equimod_zoo.load(stage)  # the folder must load the way users load it
        if sum(p.numel() for p in reloaded.parameters()) != sum(p.numel() for p in model.parameters()):
            raise UserError(f"{stage}: the written folder does not rebuild the converted {arch}")
        move_into_place(stage, out)
    return ConversionReport(folder=out, arch=arch, model_args=dict(model_args),
                            weights_sha256=config.equimod.weights_sha256, backbone_keys=len(backbone),
                            head_keys=len(heads), ignored_keys=tuple(ignored))


def _plain_args(model_args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in model_args.items()) or "no model_args"


def _state_dict(content: dict[str, Any], layout: CheckpointLayout, path: Path | str) -> dict[str, torch.Tensor]:
    for key in layout.containers:
        if isinstance(content.get(key), dict):
            content = content[key]
            break
    tensors = {k: v for k, v in content.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise UserError(f"{path}: no tensors found (looked in {', '.join(layout.containers) or 'the top level'}); "
                        "is --from right?")
    return tensors


def _strip_backbone_prefix(key: str, prefix: str) -> str | None:
    """The key inside the backbone, allowing the prefix to be nested (`model.backbone.0...`)."""
    if not prefix:
        return key
    if key.startswith(prefix):
        return key[len(prefix):]
    marker = f".{prefix}"
    position = key.find(marker)
    return key[position + len(marker):] if position >= 0 else None


def _load_strict(model: torch.nn.Module, backbone: dict[str, torch.Tensor], arch: str, path: Path) -> None:
    check_dtypes(backbone, model, path)  # torch would copy integer tensors into float weights without a word
    expected = set(model.state_dict())
    missing = sorted(expected - set(backbone))
    unexpected = sorted(set(backbone) - expected)
    if missing or unexpected:
        raise UserError(
            f"{path}: the backbone does not fit {arch}: {len(missing)} missing keys {missing[:4]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:4]}; refusing "
            f"{'a partial' if missing else 'a mismatched'} backbone (check --from, --arch, --model-args)")
    try:
        model.load_state_dict(backbone, strict=True)
    except RuntimeError as error:
        sizes = [line.strip() for line in str(error).splitlines() if "size mismatch" in line]
        raise UserError(f"{path}: the backbone does not fit {arch}: {(sizes or [str(error)])[0]}; pass --arch "
                        "or --model-args") from None


def _official_method(content: dict[str, Any], source: str) -> str | None:
    """The official EquiMod checkpoints are BYOL-based exactly when they carry a momentum model."""
    if source != "equimod-official":
        return None
    return Method("byol" if "momentum_model" in content else "simclr", equimod=True).name
