"""Extraction over the ranks of a torchrun job: one output folder, one manifest, shards shared out.

    torchrun --nproc_per_node 4 -m equimod_zoo extract --images DIR --out OUT

Every rank lists the same input (it checks that it does) and builds the same model. Rank 0
checks OUT and records the manifest (OUT/extraction.json, not yet complete). Shard k belongs
to rank k % world size, which writes it, each file atomically, so a rank that dies loses at
most the shard it was writing and damages no other; a rerun skips every finished shard and
extracts the rest (with any number of ranks: a shard is the same rows whoever writes it).
Streamed inputs (webdataset shards) are read by every rank, each decoding its own shards
only. When all ranks have finished, rank 0 gathers the failures and marks the manifest
complete. Shards hold the same contiguous row ranges as in one process and their batches
never straddle a shard, so the result has the same rows, order and features as one process.

The ranks exchange only a few small messages (the input check, the OUT check, the end): over
gloo on CPUs, over NCCL when each rank computes on its own GPU, cuda:LOCAL_RANK. Several
machines need OUT on a filesystem they all see.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from equimod_zoo.errors import UserError
from equimod_zoo.torchrun import torchrun_world
from equimod_zoo.extraction.extract import ExtractionSummary, ShardCoordinator, extract_features
from equimod_zoo.extraction.store import FeatureStore

# A rank that finishes early waits at the last barrier for the slowest one: up to a shard's
# work, or a whole share when a resumed run finds some ranks' shards done. torchrun stops all
# ranks when one dies, so a long timeout never leaves a job hanging there.
BARRIER_TIMEOUT = timedelta(hours=24)


def extract_features_distributed(
    images: Any = None,
    *,
    out: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool | str = True,
    init_method: str | None = None,
    **options: Any,
) -> ExtractionSummary:
    """`extract_features` on every rank of a torchrun job (or plain, without one).

    Takes `extract_features`' arguments. `device` defaults to cuda:LOCAL_RANK when there are
    GPUs ("cuda" alone also means the rank's own GPU), else the CPU. Only rank 0 shows a
    progress bar. `init_method` is where the ranks meet (default: torchrun's env://). Every
    rank returns the summary of the whole extraction, except `seconds` (its own) and `device`.
    """
    rank, world_size, local_rank = torchrun_world()
    if world_size == 1:
        return extract_features(images, out=out, device=device, progress=progress, **options)
    device = _rank_device(device, local_rank)
    # The rank's GPU as the current one while it runs (pinned-memory threads allocate there), then back.
    on_device = torch.cuda.device(device) if device.type == "cuda" else nullcontext()
    with on_device, _process_group(rank, world_size, init_method, device) as group:
        return extract_features(images, out=out, device=device, progress=progress if rank == 0 else False,
                                coordinator=RankCoordinator(group), **options)


class RankCoordinator(ShardCoordinator):
    """Rank 0 checks OUT and writes the manifest; shard k is rank k % world size's; rank 0
    completes the manifest once all ranks are done."""

    def __init__(self, group: Any = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)

    def begin(self, store: FeatureStore, *, info: dict[str, Any], sources: Sequence[str | Path] = ()) -> None:
        inputs = [None] * self.world_size
        dist.all_gather_object(inputs, info["input"], group=self.group)
        different = [r for r, seen in enumerate(inputs) if seen != inputs[0]]
        if different:
            raise UserError(f"rank {different[0]} lists other input files than rank 0: every rank must see the "
                            f"same input (on several machines, a filesystem they share)")
        self._on_rank0(lambda: super(RankCoordinator, self).begin(store, info=info, sources=sources))

    def owns(self, shard: int) -> bool:
        return shard % self.world_size == self.rank

    def finish(self, store: FeatureStore, num_shards: int, skipped: int, redone: int) -> tuple[int, int]:
        counts = [None] * self.world_size
        dist.all_gather_object(counts, (skipped, redone), group=self.group)  # also: every rank's shards are written
        skipped, redone = (sum(column) for column in zip(*counts))
        return self._on_rank0(lambda: super(RankCoordinator, self).finish(store, num_shards, skipped, redone))

    def _on_rank0(self, work: Any) -> Any:
        """Run `work` on rank 0 and hand its result, or its error, to every rank."""
        outcome: list[Any] = [None]
        if self.rank == 0:
            try:
                outcome[0] = ("ok", work())
            except (OSError, ValueError) as error:
                outcome[0] = ("error", f"{type(error).__name__}: {error}")
                dist.broadcast_object_list(outcome, src=0, group=self.group)
                raise
        dist.broadcast_object_list(outcome, src=0, group=self.group)
        status, value = outcome[0]
        if status == "error":
            raise UserError(f"rank 0 failed: {value}")
        return value


def process_group_backend(device: torch.device) -> str:
    """NCCL between ranks on GPUs (where torch has it), gloo between CPU ranks."""
    return "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"


def _rank_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


@contextmanager
def _process_group(rank: int, world_size: int, init_method: str | None, device: torch.device) -> Iterator[Any]:
    """A group of the ranks on the backend for `device`: torch's default group when we start it
    (and end it after), else a group of our own beside the caller's."""
    backend = process_group_backend(device)
    if dist.is_initialized():
        group = dist.new_group(backend=backend, timeout=BARRIER_TIMEOUT)
        try:
            yield group
        finally:
            dist.destroy_process_group(group)
        return
    # device_id binds NCCL's communicator to the rank's GPU; gloo takes no device.
    dist.init_process_group(backend=backend, init_method=init_method or "env://", rank=rank, world_size=world_size,
                            timeout=BARRIER_TIMEOUT, device_id=device if backend == "nccl" else None)
    try:
        yield None
    finally:
        dist.destroy_process_group()
