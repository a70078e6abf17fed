"""The distributed pieces: process-group setup from torchrun's environment, logging reductions, seeding.

The differentiable collectives the losses use live with the losses, in the core
(`equimod_zoo.equimod.distributed`), and are imported here for the trainer.

Single-process runs need none of it: every helper here is the identity (or rank 0 of 1) when no
process group is initialised, so the same training code runs on a laptop CPU and under
`torchrun --nproc_per_node=8` (NCCL on CUDA, gloo on CPU).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor

from equimod_zoo.equimod.distributed import is_distributed
from equimod_zoo.torchrun import torchrun_world


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its global rank, the world size, its rank on the node, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes logs, checkpoints and exports."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(
    *,
    device: str | torch.device | None = None,
    backend: str | None = None,
    init_method: str | None = None,
) -> DistInfo:
    """Join the process group described by torchrun's RANK / WORLD_SIZE / LOCAL_RANK, if any.

    Without those variables (a plain `python` run) nothing is initialised and rank 0 of 1 is
    returned. `device` defaults to `cuda:LOCAL_RANK` when CUDA is available, else the CPU;
    `backend` defaults to NCCL on CUDA and gloo on the CPU; `init_method` defaults to env://
    (torchrun's MASTER_ADDR / MASTER_PORT), or e.g. "file:///shared/path" for a file rendezvous.
    """
    rank, world_size, local_rank = torchrun_world()

    if device is None:
        device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)

    if world_size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size)
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup_distributed() -> None:
    """Leave the process group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def reduce_mean(x: Tensor) -> Tensor:
    """The mean of a (detached) tensor over all ranks, for logging; the identity when not distributed."""
    if not is_distributed():
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / dist.get_world_size()


def convert_sync_batchnorm(model: nn.Module, info: DistInfo) -> nn.Module:
    """Every BatchNorm of `model` as a SyncBatchNorm when training on several GPUs, else `model`.

    Statistics then cover the global batch, as in the paper's multi-GPU recipe. PyTorch's
    SyncBatchNorm runs on GPUs only, so CPU (gloo) runs keep per-rank statistics.
    """
    if info.is_distributed and info.device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def seed_everything(seed: int, *, rank: int = 0) -> int:
    """Seed Python, NumPy and torch with `seed + rank` (ranks draw different augmentations); returns it."""
    rank_seed = seed + rank
    random.seed(rank_seed)
    np.random.seed(rank_seed % 2**32)
    torch.manual_seed(rank_seed)
    return rank_seed


def hardware_name(device: torch.device, world_size: int = 1) -> str:
    """The accelerator a run trains on, as a card states it: "1x NVIDIA H100 80GB HBM3", "cpu"."""
    if device.type == "cuda":
        return f"{world_size}x {torch.cuda.get_device_name(device)}"
    return f"{world_size}x {device.type}" if world_size > 1 else device.type
