"""Measured numbers, each recorded once with the command that produced it, keyed by the weights' sha256.

A records folder holds one JSON file per weights file, `SHA256.json`:

    {"weights_sha256": "...", "records": [{"dataset": "cifar10", "split": "test", "protocol": "linear",
      "metric": "top1", "value": 78.58, "command": "equimod-zoo linear ...", "date": "2026-11-25",
      "version": "0.1.0", "commit": "05be102..."}, ...]}

Evaluation commands add to a folder the user names (`--record DIR`); the zoo's own numbers live
in `equimod_zoo/zoo/records/`, and the catalogue rows, model cards, MODEL_CARDS.md and the
README's results table are generated from them. A new measurement of the same (dataset, split,
protocol, metric) on the same weights replaces the old one. A records folder is never a model
folder: numbers do not travel inside the weights they describe.

Recorded commands name paths as seen from the repository root, with the data folder spelled
`$EQUIMOD_DATA` (default `../shared/data` beside the repository), never a machine's absolute path.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from equimod_zoo.atomic import atomic_write_text
from equimod_zoo.constants import CONFIG_FILE, DATA_ENV, WEIGHTS_FILE
from equimod_zoo.dataclass_dict import build_dataclass
from equimod_zoo.errors import RecordsError
from equimod_zoo.file_lock import exclusive_lock
from equimod_zoo.json_file import read_json
from equimod_zoo.version import __version__

PACKAGE_DIR = Path(__file__).resolve().parent
ZOO_RECORDS_DIR = PACKAGE_DIR / "zoo" / "records"
# The checkout the package runs from (None when installed without one): commands are written relative to it.
REPOSITORY = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else None
RECORD_OPTION = "--record"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SPEC_PREFIX = re.compile(r"[a-z][a-z0-9_-]+")  # `imagefolder:DIR`, `parquet:DIR`: a dataset spec's layout
_MODEL_FOLDER_FILES = (CONFIG_FILE, WEIGHTS_FILE)
LOCK_FILE = ".lock"  # serialises writers of one records folder


@dataclass(frozen=True)
class Record:
    """One measured number, in percent, on the weights with sha256 `weights_sha256`."""

    weights_sha256: str
    dataset: str  # cifar10, flowers102, ...
    split: str  # the split the number was measured on
    protocol: str  # linear, knn, finetune, ...
    metric: str  # top1, knn_top1, mean_per_class_accuracy, ...
    value: float
    command: str  # as retyped from the repository root
    date: str  # ISO date (UTC)
    version: str  # equimod-zoo's version
    commit: str | None = None  # the checkout's git commit (+dirty with local changes), when there is one

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.dataset, self.split, self.protocol, self.metric)

    def to_row(self) -> dict[str, Any]:
        """The stored form: everything but the sha256, which names the file."""
        row = asdict(self)
        del row["weights_sha256"]
        return row



def new_record(weights_sha256: str, *, dataset: str, split: str, protocol: str, metric: str, value: float,
               command: str | None = None) -> Record:
    """A record measured now, by this checkout, with the running command (or `command`)."""
    return Record(weights_sha256=weights_sha256, dataset=dataset, split=split, protocol=protocol, metric=metric,
                  value=round(float(value), 4), command=command if command is not None else command_line(),
                  date=datetime.datetime.now(datetime.timezone.utc).date().isoformat(), version=__version__,
                  commit=_commit())


def records_file(records_dir: str | Path, weights_sha256: str) -> Path:
    if not _SHA256.fullmatch(weights_sha256 or ""):
        raise RecordsError(f"{weights_sha256!r}: not a sha256 (64 lowercase hex digits); records are keyed by it")
    return Path(records_dir) / f"{weights_sha256}.json"


def read_records(records_dir: str | Path, weights_sha256: str | None = None) -> list[Record]:
    """The records of one weights file, or of all of them; a missing folder holds none."""
    folder = Path(records_dir)
    if weights_sha256 is not None:
        paths = [records_file(folder, weights_sha256)]
    else:
        paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return [record for path in paths if path.is_file() for record in _read_file(path)]


def add_records(records_dir: str | Path, records: Iterable[Record]) -> list[Path]:
    """Add `records`, replacing any with the same weights and (dataset, split, protocol, metric).

    Each file is rewritten atomically under a lock, so two evaluations recording at once both land.
    Returns the files written.
    """
    folder = Path(records_dir)
    check_records_dir(folder)
    by_sha: dict[str, list[Record]] = {}
    for record in records:
        check_portable(record.command, where=f"the {record.dataset} {record.protocol} {record.metric} record")
        by_sha.setdefault(record.weights_sha256, []).append(record)
    written = []
    with exclusive_lock(folder / LOCK_FILE):
        for sha, new in by_sha.items():
            path = records_file(folder, sha)
            kept = {r.key: r for r in (_read_file(path) if path.is_file() else [])}
            kept.update({r.key: r for r in new})
            rows = [r.to_row() for r in kept.values()]  # in the order they were first measured
            atomic_write_text(path, json.dumps({"weights_sha256": sha, "records": rows}, indent=2) + "\n")
            written.append(path)
    return written


def check_records_dirs(folders: Iterable[str | Path], *, option: str = "--records") -> None:
    """Records folders a user names to read from: each must exist (a typo must not silently drop numbers)."""
    for folder in map(Path, folders):
        if not folder.exists():
            raise RecordsError(f"{option} {folder}: no such records folder (`--record DIR` of linear or transfer "
                               f"writes one)")
        if not folder.is_dir():
            raise RecordsError(f"{option} {folder}: not a folder; give the folder that holds SHA256.json records")


def check_records_dir(folder: Path) -> None:
    """A records folder is a folder of record files, never a model folder or a file."""
    if folder.exists() and not folder.is_dir():
        raise RecordsError(f"{folder}: not a folder; --record takes a folder of records")
    if any((folder / name).exists() for name in _MODEL_FOLDER_FILES):
        raise RecordsError(f"{folder}: a model folder; numbers are recorded in a records folder of their own "
                           "(e.g. --record records), never beside the weights they describe")


def _read_file(path: Path) -> list[Record]:
    data = read_json(path, error=RecordsError)
    try:
        sha = data["weights_sha256"]
        rows = data["records"]
    except (KeyError, TypeError) as error:
        raise RecordsError(f"{path}: not a records file ({type(error).__name__}: {error})") from None
    if path.stem != sha:
        raise RecordsError(f"{path}: holds records of weights {sha}, not of the weights its name says")
    if not isinstance(rows, list):
        raise RecordsError(f"{path}: 'records' must be a list, got {type(rows).__name__}")
    names = {f.name for f in fields(Record)} - {"weights_sha256"}
    records = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RecordsError(f"{path}: records[{i}] must be an object, got {row!r}")
        # every field of its type: a value of "78.6" or a null date would break each card it reaches
        record = build_dataclass(Record, {"weights_sha256": sha, **{k: v for k, v in row.items() if k in names}},
                                 source=str(path), prefix=f"records[{i}].")
        if not math.isfinite(record.value):
            raise RecordsError(f"{path}: records[{i}].value is {record.value}, not a measured number")
        records.append(record)
    return records


# --- the command, as retyped from the repository root ---------------------------------------------------------


def data_folder() -> Path:
    """The one data folder of examples, benchmarks, tests and recorded commands: $EQUIMOD_DATA, or
    ../shared/data beside the repository (its development layout) when the variable is unset."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    return (REPOSITORY or Path.cwd()).parent / "shared" / "data"


def data_path(name: str, *, given: str | os.PathLike[str] | None = None, option: str = "--data-dir") -> Path:
    """`given` (an option's value), else the data folder's `name`, which must exist: otherwise one line
    that says what to set."""
    if given is not None:
        path = Path(given)
        if not path.exists():
            raise FileNotFoundError(f"{option} {path}: no such file or folder")
        return path
    path = data_folder() / name
    if not path.exists():
        where = (f"${DATA_ENV}={os.environ[DATA_ENV]}" if os.environ.get(DATA_ENV)
                 else f"{path.parent} (${DATA_ENV} is unset)")
        raise FileNotFoundError(f"{name}: not in the data folder {where}; set {DATA_ENV} to the folder that "
                                f"holds {name}/, or give {option} DIR")
    return path


def command_line(argv: list[str] | None = None) -> str:
    """The running command as a user would retype it from the repository root: no absolute paths, and no
    `--record DIR` (where a number was written is not how it was measured)."""
    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0]).name
    program = "equimod-zoo" if program in ("equimod-zoo", "__main__.py") else program
    words = [shlex.quote(program)]
    args = iter(argv[1:])
    for arg in args:
        if arg == RECORD_OPTION:
            next(args, None)
            continue
        if arg.startswith(f"{RECORD_OPTION}="):
            continue
        option, equals, value = arg.partition("=") if arg.startswith("--") and "=" in arg else ("", "", arg)
        words.append(shlex.quote(option) + equals + portable_path(value) if equals else portable_path(arg))
    return " ".join(words)


def command_option(command: str, option: str) -> str | None:
    """The value a recorded command gave `option` (`--resolution 64` or `--resolution=64`), or None."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    for word, following in zip(words, [*words[1:], None]):
        if word == option:
            return following
        if word.startswith(f"{option}="):
            return word.partition("=")[2]
    return None


def transfer_settings(commands: Iterable[str]) -> str:
    """The input size and feature precision recorded transfer commands were run with, e.g. `64 px,
    fp32 features` (several, joined with `or`, where they differ)."""
    settings = sorted({(command_option(c, "--resolution"), command_option(c, "--precision")) for c in commands},
                      key=str)
    return " or ".join(", ".join([f"{size} px" if size else "the model's default size",
                                  *([f"{precision} features"] if precision else [])])
                       for size, precision in settings)


def portable_path(text: str) -> str:
    """A shell word for `text`: a path under the data folder as `$EQUIMOD_DATA/...`, any other path relative to
    the repository (or the working folder without one), also after a spec prefix such as `imagefolder:`;
    anything else quoted as it is."""
    prefix, colon, rest = text.partition(":")
    if colon and _SPEC_PREFIX.fullmatch(prefix) and _is_path(rest):
        return shlex.quote(prefix + colon) + _portable(rest)
    return _portable(text) if _is_path(text) else shlex.quote(text)


def _portable(text: str) -> str:
    path = os.path.realpath(os.path.abspath(text))
    data = os.path.realpath(data_folder())
    if path == data or path.startswith(data + os.sep):
        inside = os.path.relpath(path, data)
        return f"${DATA_ENV}" + ("" if inside == "." else "/" + shlex.quote(inside))
    base = os.path.realpath(REPOSITORY or Path.cwd())
    return shlex.quote(os.path.relpath(path, base))


def _is_path(text: str) -> bool:
    """An absolute path, or a relative one that exists (a name such as `cifar10` or `hf:org/name` is not)."""
    return bool(text) and not text.startswith("-") and (os.path.isabs(text) or os.path.exists(text))


def absolute_paths(command: str) -> list[str]:
    """The words of `command` that are absolute paths (a recorded command must have none)."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    return [w for w in (part for word in words for part in word.split("=", 1)[-1:]) if os.path.isabs(w)]


def check_portable(command: str, *, where: str) -> None:
    found = absolute_paths(command)
    if found:
        raise RecordsError(f"{where}: its command names the absolute path {found[0]}; record commands with paths "
                           "relative to the repository or $EQUIMOD_DATA")


def _commit() -> str | None:
    """The checkout's HEAD commit, with `+dirty` when tracked files differ from it (the code that ran is then
    not exactly that commit)."""
    if REPOSITORY is None or not (REPOSITORY / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(REPOSITORY), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(REPOSITORY), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if changed else "")) or None
