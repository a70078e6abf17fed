"""DataLoader workers whose bad input is told as it would be in the main process.

torch re-raises an exception of a worker process in the main process as the same type, with
the worker's whole traceback for its message: a training image that does not decode becomes a
1 KB `error:` line. `UserErrorLoader` has its workers hand a UserError back as data instead; it
is raised in the main process with its own message (the file and the reason), exactly as with
`num_workers=0`. Any other exception is a bug and keeps torch's traceback.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from equimod_zoo.errors import UserError


@dataclass(frozen=True)
class _Carried:
    """A UserError raised while loading, on its way to the main process."""

    error: UserError


class _Carrying(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: Any) -> Any:
        try:
            return self.dataset[index]
        except UserError as error:
            return _Carried(error)


class _Collate:
    """`collate` over a batch, unless one of its items carries an error: then that error."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, items: list[Any]) -> Any:
        carried = next((item for item in items if isinstance(item, _Carried)), None)
        return carried if carried is not None else self.collate(items)


class UserErrorLoader(torch.utils.data.DataLoader):
    """A DataLoader (same arguments) that raises a worker's UserError in the caller, one line as it was raised."""

    def __init__(self, dataset: Dataset, *, collate_fn: Callable[[list[Any]], Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(_Carrying(dataset), collate_fn=_Collate(collate_fn or default_collate), **kwargs)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        for batch in super().__iter__():
            if isinstance(batch, _Carried):
                raise batch.error
            yield batch
