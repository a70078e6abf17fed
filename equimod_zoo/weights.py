"""Finding a model's weights and proving they are the right ones.

A name or path resolves, in order, from: a local folder or file; the zoo's bundled model
folders; the Hugging Face cache; the Hugging Face Hub. Only safetensors are read, and the
sha256 recorded in the registry (or in the folder's config.json) is checked before use.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import safetensors.torch
import torch
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

from equimod_zoo.constants import CONFIG_FILE, WEIGHTS_FILE
from equimod_zoo.errors import (ModelFolderError, UnverifiedWeightsWarning, UserError, WeightsIntegrityError,
                                WeightsNotFoundError)
from equimod_zoo.model_folder import ModelConfig, is_model_folder, sha256_file
from equimod_zoo.registry import ZooEntry, catalogue
from equimod_zoo.run_folder import model_folder_of





@dataclass(frozen=True)
class LocatedWeights:
    """A weights file on local disk, its verified sha256, its config, and where it was found."""

    name: str
    weights: Path
    config: ModelConfig
    sha256: str
    source: str  # "local", "bundled", "hf-cache" or "hf-hub"


def local_folder(name_or_path: str | Path) -> Path | None:
    """The model folder a path points to (a folder, a training run's exported model, or a file inside one),
    or None for a zoo name."""
    if not str(name_or_path).strip():  # Path("") is the working folder: never by accident
        raise UserError("model: empty name; give a zoo name, an alias or a model folder ('.' for the working "
                        "folder)")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return model_folder_of(path)
    if path.is_file():
        return path.parent
    if path.is_symlink():
        raise WeightsNotFoundError(f"{path}: dangling symbolic link")
    return None


def locate_weights(name_or_path: str | Path) -> LocatedWeights:
    """Find and verify the weights for a zoo name, alias or local model folder."""
    folder = local_folder(name_or_path)
    if folder is not None:
        return _from_local(folder, Path(name_or_path))
    entry = catalogue().get(str(name_or_path))
    if entry.status != "available":
        nearest = catalogue().nearest_available(entry)
        hint = f" The nearest available model is {nearest.name!r}." if nearest else " No zoo model is trained yet."
        raise WeightsNotFoundError(
            f"{entry.name!r} is recipe-only: it has no weights yet (train it with "
            f"`equimod-zoo train --recipe {entry.recipe} ...`, or use pretrained=False).{hint}"
        )
    looked: list[str] = []
    bundled = entry.bundled_folder
    if bundled is not None:
        if (bundled / WEIGHTS_FILE).is_file():
            return _verified(entry.name, bundled / WEIGHTS_FILE, ModelConfig.read(bundled), entry.sha256, "bundled")
        looked.append(f"bundled folder {bundled}")
    if entry.hf_hub_id:
        cached = _from_hf_cache(entry)
        if cached is not None:
            return cached
        looked.append(f"Hugging Face cache ({huggingface_hub.constants.HF_HUB_CACHE}) for {entry.hf_hub_id}")
        downloaded, why = _from_hf_hub(entry)
        if downloaded is not None:
            return downloaded
        looked.append(f"Hugging Face Hub {entry.hf_hub_id} ({why})")
    how = (
        f"connect to the internet (or unset HF_HUB_OFFLINE) so {entry.hf_hub_id} can download, or run "
        f"`hf download {entry.hf_hub_id}` on a connected machine and copy the cache"
        if entry.hf_hub_id
        else "reinstall equimod-zoo so its bundled model folders are present"
    )
    raise WeightsNotFoundError(f"no weights for {entry.name!r}: looked in " + "; ".join(looked) + f". To get them, {how}.")


def load_state_dict(located: LocatedWeights) -> dict[str, torch.Tensor]:
    """The tensors of a located safetensors file, upcast to float32; NaN or inf is refused."""
    try:
        state = safetensors.torch.load_file(str(located.weights), device="cpu")
    except Exception as error:  # safetensors raises several types for a corrupt or truncated file
        reason = " ".join(str(error).split())[:200]
        raise ModelFolderError(f"{located.weights}: not a readable safetensors file ({reason}); the file is corrupt "
                               f"or truncated") from None
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise WeightsIntegrityError(f"{located.weights}: tensor {key!r} holds NaN or inf values; refusing "
                                        f"weights that would give non-finite features")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def check_dtypes(state: Mapping[str, torch.Tensor], model: torch.nn.Module, where: str | Path) -> None:
    """Every tensor of the kind the model holds under its name: floating weights, integer counters.

    torch copies an integer or boolean tensor into a float weight without a word; the model then
    loads, and gives NaN or inf features. Such a file is not the weights it claims to be.
    """
    expected = model.state_dict()
    for key, value in state.items():
        target = expected.get(key)
        if target is not None and value.is_floating_point() != target.is_floating_point():
            raise WeightsIntegrityError(
                f"{where}: tensor {key!r} is {str(value.dtype).removeprefix('torch.')}, where the model holds "
                f"{'floating' if target.is_floating_point() else 'integer'} values; these are not weights of this "
                f"model")


def _from_local(folder: Path, given: Path) -> LocatedWeights:
    if not is_model_folder(folder):
        raise ModelFolderError(f"{given}: not a model folder (no {CONFIG_FILE} beside the weights)")
    weights = given if given.is_file() else folder / WEIGHTS_FILE  # a run folder `given` means its model folder
    if weights.suffix != ".safetensors":
        raise ModelFolderError(f"{weights}: only safetensors weights are loaded (convert with `equimod-zoo convert`)")
    if not weights.is_file():
        pickled = [name for name in ("pytorch_model.bin", "pytorch_model.pth") if (weights.parent / name).exists()]
        hint = (f"; it holds {pickled[0]}, which is never read (safetensors only): re-save it with timm's "
                f"save_for_hf(model, FOLDER, safe_serialization=True)") if pickled else ""
        raise WeightsNotFoundError(f"{weights}: missing; the folder has {CONFIG_FILE} but no {WEIGHTS_FILE}{hint}")
    config = ModelConfig.read(folder)
    return _verified(str(given), weights, config, config.equimod.weights_sha256, "local")


def _from_hf_cache(entry: ZooEntry) -> LocatedWeights | None:
    files = [huggingface_hub.try_to_load_from_cache(entry.hf_hub_id, name) for name in (CONFIG_FILE, WEIGHTS_FILE)]
    if not all(isinstance(f, str) for f in files):
        return None
    config_path, weights_path = (Path(f) for f in files)
    return _verified(entry.name, weights_path, ModelConfig.read(config_path.parent), entry.sha256, "hf-cache")


def _from_hf_hub(entry: ZooEntry) -> tuple[LocatedWeights | None, str]:
    try:
        config_path = huggingface_hub.hf_hub_download(entry.hf_hub_id, CONFIG_FILE)
        weights_path = huggingface_hub.hf_hub_download(entry.hf_hub_id, WEIGHTS_FILE)
    except LocalEntryNotFoundError:
        return None, "offline, or the Hub could not be reached"
    except (RepositoryNotFoundError, EntryNotFoundError) as error:
        return None, f"not found: {type(error).__name__}"
    except (HfHubHTTPError, ConnectionError, TimeoutError) as error:
        return None, f"the Hub could not be reached: {type(error).__name__}"
    located = _verified(entry.name, Path(weights_path), ModelConfig.read(Path(config_path).parent), entry.sha256,
                        "hf-hub")
    return located, ""


def _verified(name: str, weights: Path, config: ModelConfig, expected: str | None, source: str) -> LocatedWeights:
    actual = sha256_file(weights)
    if not expected:
        # Folders written by timm's save_for_hf (or by hand) record no sha256: refusing them would
        # make every such folder unusable, so they load, and the warning says they are unchecked.
        warnings.warn(f"{weights}: no recorded sha256 to check these weights against ({name!r} records none); "
                      f"loaded unverified, sha256 {actual}", UnverifiedWeightsWarning, stacklevel=4)
    elif actual != expected:
        raise WeightsIntegrityError(
            f"{weights}: sha256 {actual} does not match the expected {expected}; the file is corrupt or not "
            f"the weights of {name!r}. Delete it and fetch it again."
        )
    return LocatedWeights(name=name, weights=weights, config=config, sha256=actual, source=source)
