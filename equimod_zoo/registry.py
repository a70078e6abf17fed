"""The zoo catalogue: one data row per trained (or planned) backbone.

Entries live in `equimod_zoo/zoo/catalogue.json`, read on first use (never at import); code never
special-cases a model name. An entry's measured numbers are not written in the catalogue: they
are the records of its weights' sha256 in `equimod_zoo/zoo/records/` (see `equimod_zoo.records`),
read when `entry.metrics` is first asked for, so a damaged records file fails only that call.
A name resolves, in order, as an entry name, an explicit alias, a timm-style `arch.tag`, or a
short alias `{method}_{backbone}` such as `byol_equimod_r50` or `vicreg_convnext_atto`, which
points to the best entry for that method and backbone: available before recipe-only, then the
larger training set, then the longer schedule. The backbone's short name is data
(`ARCH_SHORT_NAMES`), else the timm architecture's own name.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

from equimod_zoo.dataclass_dict import build_dataclass, plain
from equimod_zoo.errors import UnknownModelError, UserError
from equimod_zoo.json_file import read_json
from equimod_zoo.method import Method
from equimod_zoo.records import Record, read_records

ZOO_DIR = Path(__file__).parent / "zoo"
CATALOGUE_FILE = ZOO_DIR / "catalogue.json"
BUNDLED_MODELS_DIR = ZOO_DIR / "models"
RECORDS_DIR_NAME = "records"  # beside the catalogue: the records its metrics come from

Status = Literal["available", "recipe-only"]
# An architecture's name in short aliases: both ResNet-18s (CIFAR and ImageNet stem) are `r18`.
ARCH_SHORT_NAMES = {"resnet18": "r18", "resnet18_cifar": "r18", "resnet50": "r50", "resnet50_cifar": "r50"}


@dataclass(frozen=True)
class ZooEntry:
    """A zoo backbone: what it is, how it was trained, where its weights live, what it scores."""

    name: str
    arch: str  # a timm architecture name
    tag: str  # timm-style pretrained tag: `arch.tag` names these weights
    method: Method
    data: str  # training data, e.g. "cifar10 (JPEG re-encoding, ../shared/data/cifar10-jpeg)"
    num_train_images: int
    epochs: int  # trained epochs when available; the recipe's plan when recipe-only
    recipe: str  # a training recipe name (training/recipes/NAME.yaml)
    license: str
    status: Status
    aliases: tuple[str, ...] = ()  # besides the name; loaded, it includes the short alias it is best for
    folder: str | None = None  # bundled folder name under equimod_zoo/zoo/models
    hf_hub_id: str | None = None  # set only once the repository was published
    sha256: str | None = None  # of model.safetensors
    notes: str = ""
    # where the records of `sha256` live (the catalogue's `records/`); not a catalogue key
    records_dir: Path | None = field(default=None, compare=False, repr=False, init=False)

    @property
    def arch_tag(self) -> str:
        return f"{self.arch}.{self.tag}"

    @property
    def backbone(self) -> str:
        """The architecture's short name in aliases: `ARCH_SHORT_NAMES`, else timm's name (`convnext_atto`)."""
        return ARCH_SHORT_NAMES.get(self.arch, self.arch)

    @property
    def short_alias(self) -> str:
        return f"{self.method}_{self.backbone}"

    @property
    def epochs_text(self) -> str:
        """"41", or "800 planned" for a recipe-only entry, whose epochs are the plan, not done."""
        return str(self.epochs) if self.status == "available" else f"{self.epochs} planned"

    def matches(self, pattern: str) -> bool:
        """Whether the name, `arch.tag` or an explicit alias matches a shell-style pattern such as `*r18*`."""
        return any(fnmatch.fnmatchcase(key, pattern) for key in (self.name, self.arch_tag, *self.aliases))

    @property
    def bundled_folder(self) -> Path | None:
        return BUNDLED_MODELS_DIR / self.folder if self.folder else None

    @cached_property
    def metrics(self) -> tuple[Record, ...]:
        """The numbers measured on these weights: the records of `sha256` (none for a recipe-only entry)."""
        if not self.sha256 or self.records_dir is None:
            return ()
        return tuple(read_records(self.records_dir, self.sha256))

    def __post_init__(self) -> None:
        if isinstance(self.method, str):  # ZooEntry(method="simclr_equimod", ...) from Python
            object.__setattr__(self, "method", Method.parse(self.method))

    def to_dict(self) -> dict[str, Any]:
        """The catalogue row (measured numbers are not part of it: see `metrics`)."""
        return {name: plain(getattr(self, name)) for name in self.__dataclass_fields__ if name != "records_dir"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | Path = CATALOGUE_FILE,
                  records_dir: Path | None = None) -> ZooEntry:
        """A catalogue entry, every key and type checked (`build_dataclass`)."""
        entry = build_dataclass(cls, data, source=str(source), prefix=f"{data.get('name')}.")
        object.__setattr__(entry, "records_dir", records_dir)
        return entry



@dataclass
class Catalogue:
    entries: tuple[ZooEntry, ...]
    _index: dict[str, ZooEntry] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {}
        for entry in self.entries:
            for key in (entry.name, entry.arch_tag, *entry.aliases):
                if key in self._index and self._index[key] is not entry:
                    raise UserError(f"{CATALOGUE_FILE}: {key!r} names both {self._index[key].name} and {entry.name}")
                self._index[key] = entry
        for alias, entry in self.short_aliases().items():
            self._index.setdefault(alias, entry)

    @classmethod
    def from_file(cls, path: Path = CATALOGUE_FILE, records_dir: Path | None = None) -> Catalogue:
        """The catalogue at `path`, each entry's metrics read from `records_dir` (default: `records/` beside it)."""
        path = Path(path)
        records_dir = path.parent / RECORDS_DIR_NAME if records_dir is None else Path(records_dir)
        entries = []
        for row in read_json(path, expect=list):
            if isinstance(row, Mapping) and "metrics" in row:
                raise UserError(f"{path}: entry {row.get('name')!r} writes metrics by hand; measured numbers "
                                f"live only in the records ({records_dir})")
            entries.append(ZooEntry.from_dict(row, source=path, records_dir=records_dir))
        # Each entry shows every name it answers to, as `equimod-zoo info` does: its own aliases, then the
        # short alias it is the best entry for (the catalogue file keeps only the former).
        best = cls(tuple(entries)).short_aliases()
        named = []
        for entry in entries:
            aliases = tuple(dict.fromkeys([*entry.aliases, *(a for a, e in best.items() if e is entry)]))
            named.append(replace(entry, aliases=aliases))
            object.__setattr__(named[-1], "records_dir", records_dir)
        return cls(tuple(named))

    def short_aliases(self) -> dict[str, ZooEntry]:
        best: dict[str, ZooEntry] = {}
        for entry in self.entries:
            current = best.get(entry.short_alias)
            if current is None or _rank(entry) > _rank(current):
                best[entry.short_alias] = entry
        return best

    def aliases_of(self, entry: ZooEntry) -> list[str]:
        """Every name that resolves to `entry` besides its own: its aliases, its short alias, its `arch.tag`."""
        short = [a for a, e in self.short_aliases().items() if e is entry]
        return list(dict.fromkeys([*entry.aliases, *short, entry.arch_tag]))

    def get(self, name: str) -> ZooEntry:
        try:
            return self._index[name]
        except KeyError:
            raise UnknownModelError(
                f"unknown model {name!r}: not a zoo name, alias or arch.tag, and not an existing path; "
                f"`equimod-zoo list` shows the zoo"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def nearest_available(self, entry: ZooEntry) -> ZooEntry | None:
        """The available entry closest to `entry`: same method, then same backbone, then anything."""
        available = [e for e in self.entries if e.status == "available"]
        if not available:
            return None
        return max(available, key=lambda e: (e.method == entry.method, e.backbone == entry.backbone, _rank(e)))


def _rank(entry: ZooEntry) -> tuple[bool, int, int]:
    return (entry.status == "available", entry.num_train_images, entry.epochs)


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    return Catalogue.from_file()


def get_entry(name: str) -> ZooEntry:
    """The zoo entry for a name, alias or `arch.tag`."""
    return catalogue().get(name)


def list_models(pattern: str | Sequence[str] | None = None, *, pretrained: bool = False,
                status: Status | None = None) -> list[ZooEntry]:
    """Zoo entries, as timm's `list_models`: `list_models("*r18*")`, `list_models(pretrained=True)`.

    Args:
        pattern: shell-style pattern(s) matched against each entry's name, `arch.tag` and aliases.
        pretrained: only entries with trained weights (status "available").
        status: only entries with this status.
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern or [])
    return [e for e in catalogue().entries
            if (not patterns or any(e.matches(p) for p in patterns))
            and (not pretrained or e.status == "available")
            and (status is None or e.status == status)]
