"""The heads file, FOLDER/equimod_heads.safetensors, and its schema in FOLDER/config.json.

The file holds the pre-training heads by module name (the base method's heads, `BASE_HEADS`:
`projection.*`, and `predictor.*` for BYOL and MoCo v3; `g_eq.*`, `g_t.*`, `u.*` and the parameter
standardisation `param_mean` / `param_std` for EquiMod). Its schema, a `HeadsSchema`, is recorded
under config.json's `equimod.heads`: the method, every head's layer widths and the names of the
augmentation parameters g_t reads, in order. Readers build the heads from the schema; only folders
written before the schema existed have their sizes inferred from the tensors (`HeadsSchema.infer`,
the one place that does it).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from equimod_zoo.constants import CONFIG_FILE, HEADS_FILE
from equimod_zoo.dataclass_dict import build_dataclass
from equimod_zoo.equimod.augment import PARAM_NAMES
from equimod_zoo.equimod.module import EquiMod
from equimod_zoo.errors import ModelFolderError, UnknownNameError, UserError, WeightsIntegrityError
from equimod_zoo.method import BASE_METHODS, Method
from equimod_zoo.model_folder import ModelConfig
from equimod_zoo.weights import check_dtypes

SCHEMA_KEY = "heads"  # config.json: equimod.heads
# The heads each base method trains and exports besides EquiMod's (each a `HeadsSchema` field).
BASE_HEADS: dict[str, tuple[str, ...]] = {
    "simclr": ("projection",),
    "byol": ("projection", "predictor"),
    "vicreg": ("projection",),
    "barlow_twins": ("projection",),
    "mocov3": ("projection", "predictor"),
}
INVARIANCE_HEADS = ("projection", "predictor")  # every head a base method may have
EQUIMOD_KEYS = ("g_eq", "g_t", "u", "param_mean", "param_std")
assert set(BASE_HEADS) == set(BASE_METHODS), "every base method states its heads"


@dataclass(frozen=True)
class HeadsSchema:
    """What the heads file holds: the method, each head's layer widths (input first), g_t's parameter names.

    Which heads a method has is data (`BASE_HEADS`): SimCLR's projection is (D, 2048, 2048, 128),
    BYOL's (D, 4096, 256) and its predictor (256, 4096, 256); EquiMod adds g_eq (D, 2048, 2048,
    128) and g_t (len(param_names), 128); u maps [y0, a] (g_eq's output + g_t's output) back to
    g_eq's output, so its sizes follow. Heads the method does not have are empty.
    """

    method: str
    projection: tuple[int, ...]
    predictor: tuple[int, ...] = ()
    g_eq: tuple[int, ...] = ()
    g_t: tuple[int, ...] = ()
    param_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            method = Method.parse(self.method)
        except UnknownNameError as error:
            raise UserError(f"heads schema: {error}") from None
        if method.equimod != bool(self.g_eq) or method.equimod != bool(self.g_t):
            raise UserError(f"heads schema: g_eq and g_t are given exactly for EquiMod methods, not for {self.method}")
        expected = BASE_HEADS[method.base]
        given = tuple(head for head in INVARIANCE_HEADS if getattr(self, head))
        if given != expected:
            raise UserError(f"heads schema: {self.method} has the heads {', '.join(expected)}, "
                            f"the schema gives {', '.join(given) or 'none'}")
        if method.equimod and (len(self.g_t) != 2 or self.g_t[0] != len(self.param_names)):
            raise UserError(f"heads schema: g_t's input ({self.g_t[:1]}) must be the number of parameter names "
                            f"({len(self.param_names)})")
        if not method.equimod and self.param_names:
            raise UserError(f"heads schema: parameter names are for EquiMod methods, not {self.method}")

    @property
    def equimod(self) -> bool:
        return bool(self.g_eq)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "projection": list(self.projection), "predictor": list(self.predictor),
                "g_eq": list(self.g_eq), "g_t": list(self.g_t), "param_names": list(self.param_names)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str) -> HeadsSchema:
        """The schema config.json records, every key and type checked (`build_dataclass`)."""
        try:
            return build_dataclass(cls, data, source=source, prefix=f"equimod.{SCHEMA_KEY}.")
        except UserError as error:
            message = str(error) if str(error).startswith(source) else f"{source}: equimod.{SCHEMA_KEY}: {error}"
            raise ModelFolderError(message) from None

    @classmethod
    def infer(cls, state: Mapping[str, torch.Tensor], *, source: str) -> HeadsSchema:
        """The schema of a heads file written before schemas were recorded (sizes read off the tensors).

        Such files come from SimCLR or BYOL (a predictor tells them apart) and the 18-parameter
        pipeline, the only ones there were.
        """
        widths = {prefix: _linear_widths(state, prefix) for prefix in ("projection", "predictor", "g_eq", "g_t")}
        if not widths["projection"]:
            raise ModelFolderError(f"{source}: no projection head, so not a heads file this version can read")
        base = "byol" if widths["predictor"] else "simclr"
        equimod = bool(widths["g_eq"])
        if equimod and widths["g_t"][0] != len(PARAM_NAMES):
            raise ModelFolderError(f"{source}: g_t reads {widths['g_t'][0]} parameters and config.json records no "
                                   f"heads schema naming them (files without one have all {len(PARAM_NAMES)})")
        return cls(method=Method(base, equimod=equimod).name, projection=widths["projection"],
                   predictor=widths["predictor"], g_eq=widths["g_eq"], g_t=widths["g_t"],
                   param_names=PARAM_NAMES if equimod else ())


def read_heads_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a heads file, on the CPU, floats as float32."""
    try:
        state = safetensors.torch.load_file(str(path), device="cpu")
    except FileNotFoundError:
        raise ModelFolderError(f"{path}: missing") from None
    except Exception as error:  # safetensors raises several types for a corrupt file
        raise ModelFolderError(f"{path}: not a readable safetensors file ({error})") from None
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise WeightsIntegrityError(f"{path}: tensor {key!r} holds NaN or inf values")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def read_heads_schema(folder: str | Path, state: Mapping[str, torch.Tensor] | None = None) -> HeadsSchema:
    """FOLDER's heads schema: config.json's `equimod.heads`, else inferred from the heads file (older folders)."""
    folder = Path(folder)
    recorded = ModelConfig.read(folder).equimod.heads if (folder / CONFIG_FILE).is_file() else None
    if recorded:
        return HeadsSchema.from_dict(recorded, source=str(folder / CONFIG_FILE))
    if state is None:
        state = read_heads_state(folder / HEADS_FILE)
    return HeadsSchema.infer(state, source=str(folder / HEADS_FILE))


def load_equimod_heads(folder: str | Path) -> EquiMod | None:
    """EquiMod's module (eval mode) from FOLDER/equimod_heads.safetensors, or None when there is no file or no
    EquiMod module; its `embed` and `predict` map features and parameters as in training."""
    path = Path(folder) / HEADS_FILE
    if not path.is_file():
        return None
    state = read_heads_state(path)
    recorded = (Path(folder) / CONFIG_FILE).is_file() and ModelConfig.read(folder).equimod.heads is not None
    if not recorded and not any(key.startswith("g_eq.") for key in state):
        return None  # no EquiMod module in our layout (invariance heads only, or a converted foreign checkpoint's)
    schema = read_heads_schema(folder, state)
    if not schema.equimod:
        return None  # invariance heads only
    try:
        input_dim, hidden, *_, output_dim = schema.g_eq
        param_dim, param_embed = schema.g_t
        module = EquiMod(input_dim, param_dim=param_dim, param_names=schema.param_names, hidden_dim=hidden,
                         output_dim=output_dim, param_embed_dim=param_embed,
                         param_mean=state["param_mean"], param_std=state["param_std"])
        # the file also holds the invariance heads (projection, predictor): keep EquiMod's own
        own = {k: v for k, v in state.items() if k.split(".")[0] in EQUIMOD_KEYS}
        check_dtypes(own, module, path)
        module.load_state_dict(own, strict=True)
    except (KeyError, RuntimeError, ValueError) as error:
        raise ModelFolderError(f"{path}: does not hold the EquiMod heads its schema describes ({error})") from None
    return module.eval()


def _linear_widths(state: Mapping[str, torch.Tensor], prefix: str) -> tuple[int, ...]:
    """(in, out_1, ..., out_k) of the 2-D `PREFIX.layers.N.weight` tensors in layer order; () if none."""
    pattern = re.compile(rf"{re.escape(prefix)}\.layers\.(\d+)\.weight")
    linear = sorted((int(m.group(1)), state[key]) for key in state
                    if (m := pattern.fullmatch(key)) and state[key].ndim == 2)
    if not linear:
        return ()
    return (int(linear[0][1].shape[1]), *(int(weight.shape[0]) for _, weight in linear))

