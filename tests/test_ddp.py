"""Two gloo processes on the CPU train exactly like one process on their combined batch.

Each rank holds half of a global batch. The losses gather the other rank's embeddings (NT-Xent's
negatives, MoCo v3's keys, VICReg's variance and covariance) or all-reduce their statistics (Barlow Twins'
cross-correlation), the collectives' backward returns the gradients, and DDP averages the
parameter gradients: the result must equal one process computing the loss over the whole batch.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from equimod_zoo.equimod.distributed import gather_with_grad, get_rank, get_world_size, is_distributed
from equimod_zoo.training.distributed import (
    cleanup_distributed,
    convert_sync_batchnorm,
    reduce_mean,
    seed_everything,
    setup_distributed,
)
import equimod_zoo  # noqa: F401  (registers resnet18_cifar)
from equimod_zoo.equimod import EquiMod, NTXentLoss
from equimod_zoo.training.losses import BarlowTwinsLoss, MoCoV3Loss, VICRegLoss
from equimod_zoo.training.methods import MethodConfig, build_method

WORLD_SIZE = 2
LOCAL_N = 4
FEATURES = 12
HEADS = dict(proj_hidden=16, proj_out=8, eq_hidden=16, eq_out=8, param_embed=8, barlow_proj_hidden=16,
             barlow_proj_out=8)
CONFIG = MethodConfig("simclr_equimod", **HEADS)


def _global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = WORLD_SIZE * LOCAL_N
    return {
        "h1": torch.randn(n, FEATURES, generator=g),
        "h2": torch.randn(n, FEATURES, generator=g),
        "h0": torch.randn(n, FEATURES, generator=g),
        "p1": torch.rand(n, 18, generator=g),
        "p2": torch.rand(n, 18, generator=g),
        "x1": torch.randn(n, 3, 8, 8, generator=g),
        "x2": torch.randn(n, 3, 8, 8, generator=g),
        "x0": torch.randn(n, 3, 8, 8, generator=g),
    }


def _ntxent_head() -> nn.Module:
    torch.manual_seed(1)
    return nn.Linear(FEATURES, 8)


def _vicreg_head() -> nn.Module:
    torch.manual_seed(4)
    return nn.Linear(FEATURES, 6)


def _barlow_head() -> nn.Module:
    torch.manual_seed(5)
    return nn.Linear(FEATURES, 6)


def _equimod_module() -> nn.Module:
    torch.manual_seed(2)
    # eval(): BN with running statistics is per-sample, so splitting the batch over ranks changes nothing
    # but the gather (training-mode BN statistics are what SyncBatchNorm shares, on GPUs).
    return EquiMod(FEATURES, param_dim=18, param_mean=torch.full((18,), 0.5), param_std=torch.full((18,), 0.3),
                   hidden_dim=16, output_dim=8, param_embed_dim=8).eval()


def _method(name: str = "simclr_equimod") -> nn.Module:
    torch.manual_seed(3)
    backbone = timm.create_model("resnet18_cifar", num_classes=0, channels=(4, 4, 8, 8), stem_width=4)
    return build_method(MethodConfig(name, **HEADS), backbone).eval()  # eval(): per-sample BN, as above


BUILDERS = {"ntxent": _ntxent_head, "vicreg": _vicreg_head, "barlow": _barlow_head, "mocov3": _ntxent_head,
            "equimod": _equimod_module,
            "method": _method, "barlow_method": lambda: _method("barlow_twins_equimod")}
INVARIANCE_LOSSES = {"ntxent": lambda: NTXentLoss(0.5), "vicreg": VICRegLoss, "barlow": BarlowTwinsLoss,
                     "mocov3": MoCoV3Loss}


def _run(head: nn.Module, batch: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
    if kind in INVARIANCE_LOSSES:
        return INVARIANCE_LOSSES[kind]()(head(batch["h1"]), head(batch["h2"]))
    if kind.endswith("method"):  # the whole SSLMethod: backbone, both branches, StepOutput through DDP
        return head(batch["x1"], batch["x2"], x0=batch["x0"], p1=batch["p1"], p2=batch["p2"]).loss
    return head(batch["h0"], [batch["h1"], batch["h2"]], [batch["p1"], batch["p2"]]).loss


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    # What torchrun would export for this process.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), LOCAL_RANK=str(rank))
    info = setup_distributed(device="cpu", init_method=f"file://{init_file}")
    try:
        assert dist.get_backend() == "gloo"
        assert (info.rank, info.world_size, info.local_rank, info.is_main) == (rank, WORLD_SIZE, rank, rank == 0)
        head = _ntxent_head()
        assert convert_sync_batchnorm(head, info) is head  # SyncBatchNorm is GPU-only: CPU ranks keep BN
        assert seed_everything(7, rank=info.rank) == 7 + rank
        full = _global_batch()
        local = {k: v[rank * LOCAL_N : (rank + 1) * LOCAL_N].clone().requires_grad_(True) for k, v in full.items()}
        results: dict[str, torch.Tensor] = {
            "gathered": gather_with_grad(local["h1"]).detach(),
            "distributed": torch.tensor([is_distributed(), get_rank(), get_world_size()]),
            "mean_rank": reduce_mean(torch.tensor(float(rank))),
        }
        for kind, build in BUILDERS.items():
            model = DistributedDataParallel(build())
            for t in local.values():
                t.grad = None
            _run(model, local, kind).backward()
            for name, p in model.module.named_parameters():
                results[f"{kind}.param.{name}"] = p.grad.clone()
            for name in ("h1", "h2", "h0"):
                if local[name].grad is not None:
                    results[f"{kind}.input.{name}"] = local[name].grad.clone()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        cleanup_distributed()
    assert not dist.is_initialized()


def _single_process(kind: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    full = {k: v.clone().requires_grad_(True) for k, v in _global_batch().items()}
    model = BUILDERS[kind]()
    _run(model, full, kind).backward()
    params = {name: p.grad for name, p in model.named_parameters()}
    inputs = {name: full[name].grad for name in ("h1", "h2", "h0") if full[name].grad is not None}
    return params, inputs


def test_two_ranks_match_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    full = _global_batch()

    for rank, result in enumerate(ranks):
        # (a) the gathered negatives are the whole global batch, in rank order.
        assert torch.equal(result["gathered"], full["h1"])
        assert result["distributed"].tolist() == [True, rank, WORLD_SIZE]
        assert result["mean_rank"].item() == 0.5

    for kind in BUILDERS:
        params, inputs = _single_process(kind)
        assert params and (inputs or kind.endswith("method"))
        # up to float32 rounding at the scale of the model's gradients (Barlow Twins' reach ~10)
        atol = 1e-6 * max(1.0, *(grad.abs().max().item() for grad in params.values()))
        for name, grad in params.items():
            # (b) DDP's averaged parameter gradients equal the single-process ones, on every rank.
            for result in ranks:
                torch.testing.assert_close(result[f"{kind}.param.{name}"], grad, atol=atol, rtol=1e-4,
                                           msg=f"{kind}: {name}")
        for name, grad in inputs.items():
            # Each rank's embeddings get world_size x their single-process gradient (the sum over the
            # ranks' losses), which DDP's averaging divides back out on the parameters.
            for rank, result in enumerate(ranks):
                local = grad[rank * LOCAL_N : (rank + 1) * LOCAL_N]
                torch.testing.assert_close(result[f"{kind}.input.{name}"], WORLD_SIZE * local, atol=1e-6, rtol=1e-4)


def test_helpers_are_the_identity_without_a_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = setup_distributed(device="cpu")
    assert (info.rank, info.world_size, info.is_main, info.is_distributed) == (0, 1, True, False)
    assert not dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match=r"RANK=2 is not in \[0, WORLD_SIZE=2\)"):
        setup_distributed(device="cpu")
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK='one' is not an integer"):
        setup_distributed(device="cpu")
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x
    assert not is_distributed() and get_rank() == 0 and get_world_size() == 1
    assert reduce_mean(x) is x
