"""The differentiable collectives the losses use: gather and all-reduce, across processes.

A loss whose terms span the whole batch (NT-Xent's negatives, VICReg's variance and covariance,
Barlow Twins' cross-correlation) must see every process's embeddings for its multi-GPU version to
equal one process on the global batch. Gradients flow back through these collectives: each
process's slice receives the sum, over the processes, of what their losses asked of it, and
DDP's averaging of parameter gradients then divides that sum back to the single-process value.

Every helper is the identity (rank 0 of 1) when no process group is running, so the same loss
runs on a laptop CPU and under `torchrun`.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor


def is_distributed() -> bool:
    """True when a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate `x` (N, ...) from every rank along dim 0 -> (world_size * N, ...), in rank order.

    Gradients flow back to each rank's own slice, summed over the ranks whose losses used it.
    Every rank must pass the same shape.
    """
    if not is_distributed():
        return x
    return torch.cat(dist_fn.all_gather(x), dim=0)


def all_reduce_with_grad(x: Tensor) -> Tensor:
    """The sum of `x` over every rank; its gradient is the sum of the ranks' gradients, sent to each."""
    if not is_distributed():
        return x
    return dist_fn.all_reduce(x)
