"""Training recipes: YAML data files in training/recipes/, loaded into a `Recipe` dataclass.

A recipe names everything that decides what a run computes: the architecture, the method and its
heads (`MethodConfig`), the augmentations (`AugmentConfig`), the optimiser and schedule
(`OptimConfig`), epochs, global batch size, resolutions and seed, plus how the run is executed
(precision, channels_last, compile, workers, checkpoint and log intervals).

A recipe file may start from another with `base: OTHER` (or several, `base: [A, B]`, merged left
to right) and override only what differs; nested sections merge key by key. A base is looked up
beside the file, then among the shipped recipes, so a user's YAML can start from any of them.
Files whose name starts with `_` are bases, not recipes. Recipe names are the zoo's entry names
(`equimod_zoo/zoo/catalogue.json`, field `recipe`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from equimod_zoo.dataclass_dict import build_dataclass, plain
from equimod_zoo.equimod.augment import AugmentConfig
from equimod_zoo.errors import UnknownNameError, UserError
from equimod_zoo.limits import (MAX_BATCH_SIZE, MAX_EPOCHS, MAX_PARAM_SAMPLES, MAX_SEED, MAX_WORKERS,
                                check_limit, check_resolution)
from equimod_zoo.model_folder import check_architecture, check_model_args, check_model_size
from equimod_zoo.training.methods import MethodConfig
from equimod_zoo.training.optim import OptimConfig
from equimod_zoo.yaml_io import dump_yaml, load_yaml_file

RECIPES_DIR = Path(__file__).parent / "recipes"
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# Fields that change how a run executes, not what it computes: a resumed run may change them.
EXECUTION_FIELDS = ("workers", "compile", "compile_mode", "log_every", "checkpoint_every")
# What `compile` puts through torch.compile: nothing, the method (forward and backward), or the
# whole training step (augmentations, forward, backward, optimiser, EMA).
COMPILE_SCOPES = ("off", "model", "step")


@dataclass
class Recipe:
    """Everything a training run needs besides its data and output folder."""

    name: str
    method: MethodConfig
    augment: AugmentConfig
    optim: OptimConfig
    description: str = ""
    arch: str = "resnet18_cifar"  # a timm architecture (CIFAR-stem ones after `import equimod_zoo`)
    model_args: dict[str, Any] = field(default_factory=dict)  # timm constructor arguments, e.g. widths
    dataset: str = "cifar10"  # the data the recipe is written for (a name, for the record)
    epochs: int = 800
    batch_size: int = 512  # global, over all processes
    data_size: int = 32  # images are stored data_size x data_size before augmentation (augment.size crops)
    eval_size: int = 32  # inference resolution written into the exported data config
    eval_crop_pct: float = 1.0  # centre-crop fraction at inference (timm's crop_pct)
    interpolation: str = "bicubic"
    seed: int = 0
    param_stats_samples: int = 100_000  # augmentation draws for the parameter standardisation stats
    precision: str = "auto"  # auto: bf16 on CPU and on GPUs that support it, else fp16; or bf16/fp16/fp32
    channels_last: bool = True
    compile: bool | str = "off"  # off, model or step (COMPILE_SCOPES); true/false read as model/off
    compile_mode: str = "default"  # torch.compile's mode: reduce-overhead uses CUDA graphs, or
    # max-autotune-no-cudagraphs
    workers: int = 8  # DataLoader workers (decoding only; augmentations run batched on the device)
    checkpoint_every: int = 10  # epochs
    log_every: int = 50  # steps

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "data_size", "eval_size", "checkpoint_every",
                     "log_every", "param_stats_samples"):
            if getattr(self, name) < 1:
                raise UserError(f"recipe {self.name}: {name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise UserError(f"recipe {self.name}: workers must be >= 0, got {self.workers}")
        if not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"recipe {self.name}: seed must be in 0..{MAX_SEED}, got {self.seed}")
        _check_sizes(self)
        if isinstance(self.compile, bool):  # recipes and checkpoints from before the scopes
            self.compile = "model" if self.compile else "off"
        if self.compile not in COMPILE_SCOPES:
            raise UserError(f"recipe {self.name}: compile must be one of {', '.join(COMPILE_SCOPES)}, "
                            f"got {self.compile!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"recipe {self.name}: precision must be one of {', '.join(PRECISIONS)}, "
                            f"got {self.precision!r}")
        if self.data_size < self.augment.size:
            raise UserError(f"recipe {self.name}: data_size {self.data_size} is below the crop size "
                            f"augment.size {self.augment.size}")
        if not 0 < self.eval_crop_pct <= 1:
            raise UserError(f"recipe {self.name}: eval_crop_pct must be in (0, 1], got {self.eval_crop_pct}")
        # what reaches timm.create_model: a registered name and constructor arguments, never a path
        check_architecture(self.arch, f"recipe {self.name}")
        model_args = check_model_args(self.model_args, f"recipe {self.name}", arch=self.arch)
        check_model_size(self.arch, model_args, where=f"recipe {self.name}: {self.arch} with model_args "
                                                       f"{self.model_args}")
        # g_t reads the pipeline's parameter vector: its size follows the recipe's list
        num_params = len(self.augment.params)
        if self.method.param_dim is None:
            self.method = dataclasses.replace(self.method, param_dim=num_params)
        elif self.method.param_dim != num_params:
            raise UserError(f"recipe {self.name}: method.param_dim {self.method.param_dim} differs from the "
                            f"{num_params} entries of augment.params")

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only (YAML, JSON and `torch.load(weights_only=True)` all read it)."""
        return plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict(), sort_keys=False)

    def override(self, overrides: Mapping[str, Any]) -> Recipe:
        """A copy with `overrides` applied; keys may be dotted (`optim.lr`, `method.temperature`)."""
        data = self.to_dict()
        # Derived entries follow what is overridden unless given too: the parameter list follows the
        # pipeline, g_t's input size follows the list.
        if any(k.startswith("augment.") for k in overrides) and "augment.params" not in overrides:
            data["augment"]["params"] = []
        if "method.param_dim" not in overrides:
            data["method"]["param_dim"] = None
        for key, value in overrides.items():
            _set_dotted(data, key, value, source=f"recipe {self.name}")
        return recipe_from_dict(data, source=f"recipe {self.name}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "recipe") -> Recipe:
        return recipe_from_dict(data, source=source)


def _check_sizes(recipe: Recipe) -> None:
    """Every count and size a recipe (or an override) sets, against its limit, before a run allocates it."""
    where = f"recipe {recipe.name}"
    check_limit(f"{where}: epochs", recipe.epochs, MAX_EPOCHS)
    check_limit(f"{where}: batch_size", recipe.batch_size, MAX_BATCH_SIZE, unit="images")
    check_limit(f"{where}: workers", recipe.workers, MAX_WORKERS)
    check_limit(f"{where}: param_stats_samples", recipe.param_stats_samples, MAX_PARAM_SAMPLES)
    for name in ("data_size", "eval_size"):
        check_resolution(f"{where}: {name}", getattr(recipe, name))
    check_resolution(f"{where}: eval_size", recipe.eval_size, crop_pct=recipe.eval_crop_pct)


def list_recipes() -> list[str]:
    """The names of the recipes shipped in training/recipes/."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def load_recipe(name_or_path: str | Path | Recipe, *, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """A recipe by name (training/recipes/NAME.yaml) or from a YAML file, with `overrides` applied."""
    if isinstance(name_or_path, Recipe):
        recipe = name_or_path
    else:
        path = _recipe_path(name_or_path)
        data = _read_with_bases(path, seen=())
        data.setdefault("name", path.stem)
        recipe = recipe_from_dict(data, source=str(path))
    return recipe.override(overrides) if overrides else recipe


def recipe_from_dict(data: Mapping[str, Any], *, source: str = "recipe") -> Recipe:
    """Build a Recipe, checking every key and type; errors name `source` and the dotted key."""
    data = {k: v for k, v in data.items() if k != "base"}
    if "name" not in data:
        raise UserError(f"{source}: no 'name'")
    return build_dataclass(Recipe, data, source=source)


def _recipe_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {path} does not exist")
        return path
    candidate = RECIPES_DIR / f"{name_or_path}.yaml"
    if candidate.is_file() and not str(name_or_path).startswith("_"):
        return candidate
    raise UnknownNameError(f"unknown recipe {str(name_or_path)!r}; the recipes are: {', '.join(list_recipes())} "
                           f"(or pass a .yaml file)")


def _read_with_bases(path: Path, *, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in seen:
        raise UserError(f"{path}: recipe bases form a cycle ({' -> '.join(p.name for p in (*seen, path))})")
    data = load_yaml_file(path) or {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe is a mapping of keys to values")
    bases = data.pop("base", None) or []
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:  # several bases merge left to right
        # A base sits beside the file, or is one of the shipped recipes.
        candidates = [path.parent / f"{base}.yaml", RECIPES_DIR / f"{base}.yaml"]
        base_path = next((c for c in candidates if c.is_file()), None)
        if base_path is None:
            raise FileNotFoundError(f"{path}: base recipe {base!r} not found (looked for "
                                    f"{' and '.join(map(str, candidates))})")
        merged = _merge(merged, _read_with_bases(base_path, seen=(*seen, path.resolve())))
    return _merge(merged, data)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_dotted(data: dict[str, Any], key: str, value: Any, *, source: str) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise UnknownNameError(f"{source}: cannot override {key!r}: {part!r} is not a section")
        node = node[part]
    if leaf not in node:
        raise UnknownNameError(f"{source}: cannot override {key!r}: no such key (known: {', '.join(node)})")
    node[leaf] = value
