"""A pre-training method: a base self-supervised method, with or without EquiMod.

Devillers & Lefort (2023) add the equivariance module on top of an invariance method ("EquiMod
is a generic equivariance module"), so a method is a pair, written `simclr` or
`simclr_equimod`. This is the one place that spelling is parsed and built.
"""
from __future__ import annotations

from dataclasses import dataclass

from equimod_zoo.errors import UnknownNameError

# base method -> its name in prose; training/methods.py implements each.
BASE_METHODS: dict[str, str] = {
    "simclr": "SimCLR",
    "byol": "BYOL",
    "vicreg": "VICReg",
    "barlow_twins": "Barlow Twins",
    "mocov3": "MoCo v3",
}
# base method -> the paper that defines it, as the documents cite it.
PAPERS: dict[str, str] = {
    "simclr": "Chen et al., ICML 2020 (arXiv:2002.05709)",
    "byol": "Grill et al., NeurIPS 2020 (arXiv:2006.07733)",
    "vicreg": "Bardes, Ponce & LeCun, ICLR 2022 (arXiv:2105.04906)",
    "barlow_twins": "Zbontar et al., ICML 2021 (arXiv:2103.03230)",
    "mocov3": "Chen, Xie & He, ICCV 2021 (arXiv:2104.02057)",
}
EQUIMOD_SUFFIX = "_equimod"
EQUIMOD_TITLE = "EquiMod"
EQUIMOD_PAPER = "Devillers & Lefort, ICLR 2023 (arXiv:2211.01244)"
assert set(PAPERS) == set(BASE_METHODS), "every base method cites its paper"


@dataclass(frozen=True, order=True)
class Method:
    """A base method (`simclr`, `byol`, ...) and whether EquiMod's equivariance branch is added."""

    base: str
    equimod: bool = False

    def __post_init__(self) -> None:
        if self.base not in BASE_METHODS:
            raise UnknownNameError(f"unknown method {self.name!r}; expected one of {', '.join(all_method_names())}")

    @classmethod
    def parse(cls, name: str) -> Method:
        """`simclr_equimod` -> Method("simclr", equimod=True); an unknown name is an UnknownNameError."""
        if not isinstance(name, str):
            raise UnknownNameError(f"method {name!r} is not a name; expected one of {', '.join(all_method_names())}")
        base = name.removesuffix(EQUIMOD_SUFFIX)
        if base not in BASE_METHODS:
            raise UnknownNameError(f"unknown method {name!r}; expected one of {', '.join(all_method_names())}")
        return cls(base, equimod=base != name)

    @classmethod
    def from_plain(cls, value: object) -> Method:
        """As stored in a recipe or config.json: the name (`equimod_zoo.dataclass_dict`)."""
        return cls.parse(value)  # type: ignore[arg-type]

    def to_plain(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        return f"{self.base}{EQUIMOD_SUFFIX}" if self.equimod else self.base

    @property
    def title(self) -> str:
        """How prose names it: "SimCLR + EquiMod"."""
        base = BASE_METHODS.get(self.base, self.base)
        return f"{base} + {EQUIMOD_TITLE}" if self.equimod else base

    @property
    def baseline(self) -> Method:
        """The invariance method alone: what an EquiMod model is compared with."""
        return Method(self.base)

    def with_equimod(self) -> Method:
        return Method(self.base, equimod=True)

    def __str__(self) -> str:
        return self.name


def all_method_names() -> list[str]:
    """Every method name, each base method then its EquiMod variant."""
    return [name for base in BASE_METHODS for name in (base, f"{base}{EQUIMOD_SUFFIX}")]
