"""This process's place in a torchrun job, read from the environment torchrun sets.

Training and extraction both read it here: RANK, WORLD_SIZE and LOCAL_RANK, checked once.
"""
from __future__ import annotations

import os
from typing import NamedTuple

from equimod_zoo.errors import UserError


class TorchrunWorld(NamedTuple):
    rank: int
    world_size: int
    local_rank: int


def torchrun_world() -> TorchrunWorld:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) in a plain process."""
    values = []
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        value = os.environ.get(name) or str(default)
        try:
            values.append(int(value))
        except ValueError:
            raise UserError(f"environment variable {name}={value!r} is not an integer") from None
    world = TorchrunWorld(*values)
    if world.world_size < 1 or not 0 <= world.rank < world.world_size:
        raise UserError(f"RANK={world.rank} is not in [0, WORLD_SIZE={world.world_size})")
    if world.local_rank < 0:
        raise UserError(f"LOCAL_RANK={world.local_rank} is negative")
    return world


def is_main_rank() -> bool:
    """True in a plain process and on rank 0 of a torchrun job: the one that reports."""
    return torchrun_world().rank == 0
