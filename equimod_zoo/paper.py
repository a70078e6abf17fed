"""The paper's own figures (Devillers & Lefort 2023, Table 1), read from `equimod_zoo/zoo/paper_results.json`.

They appear on cards and in MODEL_CARDS.md beside our measurements, always labelled as the
paper's. The table is data, read on first use, like the catalogue.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from equimod_zoo.data.known import dataset_key
from equimod_zoo.dataclass_dict import build_dataclass
from equimod_zoo.json_file import read_json
from equimod_zoo.method import Method

PAPER_RESULTS_FILE = Path(__file__).parent / "zoo" / "paper_results.json"


@dataclass(frozen=True)
class PaperResult:
    """A figure from the paper: the paper's measurement, not ours."""

    method: Method
    data: str  # a known dataset key
    arch: str
    epochs: int
    top1: float
    top5: float


@dataclass(frozen=True)
class PaperTable:
    source: str  # where in the paper the figures are
    results: tuple[PaperResult, ...]


@lru_cache(maxsize=1)
def paper_table(path: Path = PAPER_RESULTS_FILE) -> PaperTable:
    return build_dataclass(PaperTable, read_json(path), source=str(path))


def paper_source() -> str:
    return paper_table().source


def paper_result(method: Method, data: str, arch: str) -> PaperResult | None:
    """The paper's linear-evaluation figure for the same method, data and architecture, if it has one."""
    key = dataset_key(data)
    return next((p for p in paper_table().results if (p.method, p.data, p.arch) == (method, key, arch)), None)
