"""Heads have the paper's layers; the losses equal hand-written references."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from equimod_zoo.equimod.heads import (
    AugmentationEmbedding,
    BYOLPredictionHead,
    BYOLProjectionHead,
    EquiModProjectionHead,
    EquivariantPredictor,
    ProjectionHead,
    SimCLRProjectionHead,
)
from equimod_zoo.training.losses import BYOLLoss, EquiModLoss, NTXentLoss, equivariance_gain


def _layout(head: nn.Module) -> list[tuple]:
    """(kind, in, out, has_bias / affine) for each layer, to compare with the paper's description."""
    rows = []
    for m in head.modules():
        if isinstance(m, nn.Linear):
            rows.append(("linear", m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.BatchNorm1d):
            rows.append(("bn", m.num_features, m.affine))
        elif isinstance(m, nn.ReLU):
            rows.append(("relu",))
    return rows


def test_equimod_heads_match_the_paper():
    assert _layout(EquiModProjectionHead(512)) == [
        ("linear", 512, 2048, False), ("bn", 2048, True), ("relu",),
        ("linear", 2048, 2048, False), ("bn", 2048, True), ("relu",),
        ("linear", 2048, 128, False), ("bn", 128, False),
    ]  # fmt: skip
    assert _layout(AugmentationEmbedding(18)) == [("linear", 18, 128, False), ("bn", 128, True)]
    assert _layout(EquivariantPredictor(128, 128)) == [("linear", 256, 128, False), ("bn", 128, False)]


def test_simclr_and_byol_heads_match_the_papers():
    assert _layout(SimCLRProjectionHead(512)) == _layout(EquiModProjectionHead(512))
    byol = [("linear", 512, 4096, False), ("bn", 4096, True), ("relu",), ("linear", 4096, 256, True)]
    assert _layout(BYOLProjectionHead(512)) == byol
    assert _layout(BYOLPredictionHead(256))[0] == ("linear", 256, 4096, False)
    assert _layout(BYOLPredictionHead(256))[-1] == ("linear", 4096, 256, True)


def test_equivariant_predictor_concatenates_y0_and_the_parameter_embedding():
    torch.manual_seed(0)
    u = EquivariantPredictor(8, 4).eval()
    y0, a = torch.randn(5, 8), torch.randn(5, 4)
    assert torch.allclose(u(y0, a), u.layers(torch.cat([y0, a], dim=1)))
    with pytest.raises(ValueError, match="at least one block"):
        ProjectionHead([])


def test_heads_convert_to_sync_batchnorm_and_still_run():
    torch.manual_seed(0)
    heads = nn.ModuleDict({"g_eq": EquiModProjectionHead(16, hidden_dim=32, output_dim=8), "u": EquivariantPredictor(8, 8)})
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(EquiModProjectionHead(16, hidden_dim=32, output_dim=8))
    synced.load_state_dict(heads["g_eq"].state_dict())
    bns = [m for m in synced.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert len(bns) == 3 and [bn.affine for bn in bns] == [True, True, False]
    assert not any(type(m) is nn.BatchNorm1d for m in synced.modules())
    x = torch.randn(6, 16)
    # Without a process group SyncBatchNorm falls back to ordinary BN: same output as the original head.
    assert torch.allclose(synced(x), heads["g_eq"](x), atol=1e-6)
    u_synced = nn.SyncBatchNorm.convert_sync_batchnorm(heads["u"])
    assert isinstance(u_synced.layers[1], nn.SyncBatchNorm) and not u_synced.layers[1].affine


def _ntxent_reference(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss written out: for each of the 2N embeddings, -log softmax of its positive over the other 2N-1."""
    z = torch.cat([a, b]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n = a.shape[0]
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        sims = [float(z[i] @ z[k]) / temperature for k in range(2 * n)]
        denominator = sum(math.exp(s) for k, s in enumerate(sims) if k != i)
        total += -(sims[positive] - math.log(denominator))
    return torch.tensor(total / (2 * n))


@pytest.mark.parametrize("temperature", [0.5, 0.2])
def test_ntxent_equals_the_written_out_formula(temperature):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    loss = NTXentLoss(temperature)(a, b)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert loss.item() == pytest.approx(_ntxent_reference(a, b, temperature).item(), rel=1e-5)
    # Embeddings are normalised first: scaling a sample changes nothing.
    assert NTXentLoss(temperature)(3 * a, b).item() == pytest.approx(loss.item(), rel=1e-5)


def test_ntxent_is_low_for_aligned_pairs_and_high_for_shuffled_ones():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(16, 32, generator=g)
    aligned = NTXentLoss(0.2)(a, a + 0.01 * torch.randn(16, 32, generator=g))
    shuffled = NTXentLoss(0.2)(a, a.roll(1, dims=0))
    assert aligned < 0.5 < math.log(31) < shuffled


def test_losses_run_in_float32_under_autocast():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = NTXentLoss(0.2)(a.bfloat16(), b.bfloat16())
        byol = BYOLLoss()(a.bfloat16(), b.bfloat16())
    assert low.dtype == byol.dtype == torch.float32
    expected = NTXentLoss(0.2)(a.bfloat16().float(), b.bfloat16().float())
    assert low.item() == pytest.approx(expected.item(), rel=1e-5)


def test_ntxent_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="same shape"):
        NTXentLoss()(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)


def test_byol_loss_is_two_minus_two_cosine():
    loss = BYOLLoss()
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    z = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])  # cos = 1, 0, -1
    assert loss(p, z).item() == pytest.approx((0.0 + 2.0 + 4.0) / 3)
    g = torch.Generator().manual_seed(3)
    p, z = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    expected = ((p / p.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)) ** 2).sum(1).mean()
    assert loss(p, z).item() == pytest.approx(expected.item(), rel=1e-5)


def _equimod_reference(y1, y2, y_hat1, y_hat2, temperature):
    """The set {y1, y2, y_hat1, y_hat2}: each embedding's positive is its partner (same image and view)."""
    n = y1.shape[0]
    z = torch.cat([y1, y2, y_hat1, y_hat2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    partner = {i: (i + 2 * n) % (4 * n) for i in range(4 * n)}
    total = 0.0
    for i in range(4 * n):
        sims = [float(z[i] @ z[k]) / temperature for k in range(4 * n)]
        denominator = sum(math.exp(s) for k, s in enumerate(sims) if k != i)
        total += -(sims[partner[i]] - math.log(denominator))
    return total / (4 * n)


def test_equimod_loss_contrasts_each_prediction_with_all_other_embeddings():
    g = torch.Generator().manual_seed(4)
    y1, y2, y_hat1, y_hat2 = (torch.randn(3, 6, generator=g) for _ in range(4))
    loss = EquiModLoss()(y1, y2, y_hat1, y_hat2)
    assert EquiModLoss().temperature == 0.2
    assert loss.item() == pytest.approx(_equimod_reference(y1, y2, y_hat1, y_hat2, 0.2), rel=1e-5)
    # A perfect predictor gives a lower loss than one that ignores the augmentation (y_hat = y0).
    y0 = torch.randn(3, 6, generator=g)
    assert EquiModLoss()(y1, y2, y1, y2) < EquiModLoss()(y1, y2, y0, y0)


def test_equivariance_gain_formula():
    y0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    y1 = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    y2 = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    y_hat1 = torch.tensor([[0.0, 5.0], [1.0, 0.0]])
    y_hat2 = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    s = 1 / math.sqrt(2)
    predicted = (1.0 + s + s + 1.0) / 4  # cos(y1, y_hat1) per row, then cos(y2, y_hat2)
    original = (0.0 + s + 0.0 + 1.0) / 4  # cos(y1, y0), then cos(y2, y0)
    gain = equivariance_gain(y0, y1, y2, y_hat1, y_hat2)
    assert not gain.requires_grad
    assert gain.item() == pytest.approx(predicted - original, rel=1e-6)
    # Collapse to invariance (y_hat = y0) gives exactly zero gain.
    assert equivariance_gain(y0, y1, y2, y0, y0).item() == pytest.approx(0.0, abs=1e-7)
