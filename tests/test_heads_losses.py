"""Heads have the paper's layers; the losses equal hand-written references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from equimod_zoo.equimod.heads import (
    AugmentationEmbedding,
    BarlowTwinsProjectionHead,
    BYOLPredictionHead,
    BYOLProjectionHead,
    EquiModProjectionHead,
    EquivariantPredictor,
    MoCoV3PredictionHead,
    MoCoV3ProjectionHead,
    ProjectionHead,
    SimCLRProjectionHead,
    VICRegProjectionHead,
)
from equimod_zoo.equimod.loss import EquiModLoss, NTXentLoss, equivariance_gain
from equimod_zoo.training.losses import BarlowTwinsLoss, BYOLLoss, MoCoV3Loss, VICRegLoss


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


def test_vicreg_and_barlow_twins_heads_match_the_papers():
    # three linear layers, BN and ReLU after the first two, no bias on the last (the reference code's)
    expander = [("linear", 512, 8192, False), ("bn", 8192, True), ("relu",),
                ("linear", 8192, 8192, False), ("bn", 8192, True), ("relu",), ("linear", 8192, 8192, False)]
    assert _layout(VICRegProjectionHead(512)) == expander
    assert _layout(BarlowTwinsProjectionHead(512)) == expander
    assert _layout(VICRegProjectionHead(16, hidden_dim=8, output_dim=4))[-1] == ("linear", 8, 4, False)


def test_mocov3_heads_match_the_reference_code():
    # BN after every layer, ReLU after the hidden ones, no affine parameters on the last BN, no biases
    assert _layout(MoCoV3ProjectionHead(512)) == [
        ("linear", 512, 4096, False), ("bn", 4096, True), ("relu",), ("linear", 4096, 256, False), ("bn", 256, False)]
    assert [row[0] for row in _layout(MoCoV3ProjectionHead(192, num_layers=3))] == [
        "linear", "bn", "relu", "linear", "bn", "relu", "linear", "bn"]  # the ViT projector
    assert _layout(MoCoV3PredictionHead()) == [
        ("linear", 256, 4096, False), ("bn", 4096, True), ("relu",), ("linear", 4096, 256, False), ("bn", 256, False)]


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
    loss = EquiModLoss()(torch.cat([y1, y2]), torch.cat([y_hat1, y_hat2]))
    assert EquiModLoss().temperature == 0.2
    assert loss.item() == pytest.approx(_equimod_reference(y1, y2, y_hat1, y_hat2, 0.2), rel=1e-5)
    # A perfect predictor gives a lower loss than one that ignores the augmentation (y_hat = y0).
    y0 = torch.randn(3, 6, generator=g)
    y = torch.cat([y1, y2])
    assert EquiModLoss()(y, y) < EquiModLoss()(y, torch.cat([y0, y0]))


def test_equivariance_gain_formula():
    y0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    y1 = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    y2 = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    y_hat1 = torch.tensor([[0.0, 5.0], [1.0, 0.0]])
    y_hat2 = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    s = 1 / math.sqrt(2)
    predicted = (1.0 + s + s + 1.0) / 4  # cos(y1, y_hat1) per row, then cos(y2, y_hat2)
    original = (0.0 + s + 0.0 + 1.0) / 4  # cos(y1, y0), then cos(y2, y0)
    y = torch.cat([y1, y2])
    gain = equivariance_gain(y0, y, torch.cat([y_hat1, y_hat2]))
    assert not gain.requires_grad
    assert gain.item() == pytest.approx(predicted - original, rel=1e-6)
    # Collapse to invariance (y_hat = y0) gives exactly zero gain.
    assert equivariance_gain(y0, y, torch.cat([y0, y0])).item() == pytest.approx(0.0, abs=1e-7)


def test_vicreg_loss_on_a_case_computed_by_hand():
    z_a = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    z_b = torch.tensor([[1.0, 0.0], [-1.0, 2.0]])
    # invariance: squared differences 0 + 0 + 0 + 4, averaged over N * d = 4 -> 1
    # variance: z_a's 2nd dimension is constant, std sqrt(0 + 1e-4) = 0.01 -> max(0, 1 - 0.01) = 0.99,
    #   its 1st and both of z_b's have unbiased variance 2 -> 0; v(Z_a) = 0.99 / 2, v(Z_b) = 0, halved: 0.2475
    # covariance: z_a's off-diagonal is 0; z_b's centred columns (1, -1) and (-1, 1) -> C_01 = -2 / (N - 1) = -2,
    #   2 * 4 / d = 4
    assert VICRegLoss()(z_a, z_b).item() == pytest.approx(25 * 1 + 25 * 0.2475 + 1 * 4, rel=1e-6)
    weighted = VICRegLoss(sim_weight=1.0, var_weight=2.0, cov_weight=3.0)(z_a, z_b)
    assert weighted.item() == pytest.approx(1 + 2 * 0.2475 + 3 * 4, rel=1e-6)


def _vicreg_paper(z_a: np.ndarray, z_b: np.ndarray, lam=25.0, mu=25.0, nu=1.0, eps=1e-4) -> float:
    """Bardes et al. (2022), eqs. 1-6, term by term in float64, with the reference code's two scales:
    s averaged over the d dimensions too, and the variance terms halved."""
    n, d = z_a.shape
    s = sum(np.sum((z_a[i] - z_b[i]) ** 2) for i in range(n)) / n / d

    def v(z):
        return sum(max(0.0, 1.0 - math.sqrt(np.var(z[:, j], ddof=1) + eps)) for j in range(d)) / d

    def c(z):
        centred = z - z.mean(axis=0)
        cov = sum(np.outer(row, row) for row in centred) / (n - 1)
        return sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d

    return lam * s + mu * (v(z_a) + v(z_b)) / 2 + nu * (c(z_a) + c(z_b))


def test_vicreg_loss_equals_the_paper_equations():
    g = torch.Generator().manual_seed(5)
    for scale in (0.3, 2.0):  # below and above the variance hinge
        z_a, z_b = scale * torch.randn(6, 5, generator=g), scale * torch.randn(6, 5, generator=g)
        expected = _vicreg_paper(z_a.double().numpy(), z_b.double().numpy())
        assert VICRegLoss()(z_a, z_b).item() == pytest.approx(expected, rel=1e-5)


def test_barlow_twins_loss_on_a_case_computed_by_hand():
    # each column standardised over the batch: z_a -> columns (-1, 1), (-1, 1); z_b -> (-1, 1), (1, -1)
    z_a = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    z_b = torch.tensor([[0.0, 5.0], [4.0, 1.0]])
    # C = z_a^T z_b / N = [[1, -1], [1, -1]]: on-diagonal (1 - 1)^2 + (1 - (-1))^2 = 4, off-diagonal 1 + 1 = 2
    assert BarlowTwinsLoss()(z_a, z_b).item() == pytest.approx(4 + 0.0051 * 2, rel=1e-4)
    assert BarlowTwinsLoss(lambda_=0.5, scale=0.1)(z_a, z_b).item() == pytest.approx(0.1 * (4 + 0.5 * 2), rel=1e-4)
    # identical views of decorrelated columns: C = I, loss 0
    z = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    assert BarlowTwinsLoss()(z, z).item() == pytest.approx(0.0, abs=1e-4)


def _barlow_twins_paper(z_a: np.ndarray, z_b: np.ndarray, lam=0.0051, eps=1e-5) -> float:
    """Zbontar et al. (2021), eqs. 1-2, in float64: C_ij = sum_b za_bi zb_bj / sqrt(sum_b za_bi^2) sqrt(sum_b zb_bj^2)
    of the mean-centred embeddings (the reference code's batch norm: the same up to its eps)."""
    a, b = z_a - z_a.mean(axis=0), z_b - z_b.mean(axis=0)
    n, d = a.shape
    c = np.array([[np.sum(a[:, i] * b[:, j]) / math.sqrt((np.sum(a[:, i] ** 2) + n * eps) * (np.sum(b[:, j] ** 2)
                                                                                               + n * eps))
                   for j in range(d)] for i in range(d)])
    return sum((1 - c[i, i]) ** 2 for i in range(d)) + lam * sum(c[i, j] ** 2 for i in range(d) for j in range(d)
                                                                if i != j)


def test_barlow_twins_loss_equals_the_paper_equations():
    g = torch.Generator().manual_seed(6)
    z_a = torch.randn(8, 5, generator=g)
    z_b = z_a + 0.5 * torch.randn(8, 5, generator=g)
    expected = _barlow_twins_paper(z_a.double().numpy(), z_b.double().numpy())
    assert BarlowTwinsLoss()(z_a, z_b).item() == pytest.approx(expected, rel=1e-5)


def test_vicreg_and_barlow_twins_run_in_float32_and_reject_bad_input():
    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    for loss in (VICRegLoss(), BarlowTwinsLoss(), MoCoV3Loss()):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = loss(a.bfloat16(), b.bfloat16())
        assert low.dtype == torch.float32
        assert low.item() == pytest.approx(loss(a.bfloat16().float(), b.bfloat16().float()).item(), rel=1e-5)
        with pytest.raises(ValueError, match="same shape"):
            loss(a, b[:3])
    with pytest.raises(ValueError, match="at least 2"):
        VICRegLoss()(a[:1], b[:1])
    with pytest.raises(ValueError, match="lambda"):
        BarlowTwinsLoss(lambda_=-1.0)


def test_mocov3_loss_on_cases_computed_by_hand():
    eye = torch.eye(2)
    # logits q.k / 0.5 = [[2, 0], [0, 2]]: each row -log(e^2 / (e^2 + 1)) = log(1 + e^-2), times 2 tau = 1
    assert MoCoV3Loss(0.5)(eye, eye).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)
    # both queries (1, 0); keys (0, 1), (1, 0): logits [[0, 1], [0, 1]] at tau 1, positives on the diagonal
    q, k = torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    expected = (math.log(1 + math.e) + math.log(1 + math.exp(-1))) / 2 * 2
    assert MoCoV3Loss(1.0)(q, k).item() == pytest.approx(expected, rel=1e-6)


def test_mocov3_loss_equals_the_paper_equation():
    """Chen, Xie & He (2021), eq. 1, in float64 with the reference code's 2 tau factor."""
    g = torch.Generator().manual_seed(8)
    q, k = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    qn = q.double().numpy() / np.linalg.norm(q.double().numpy(), axis=1, keepdims=True)
    kn = k.double().numpy() / np.linalg.norm(k.double().numpy(), axis=1, keepdims=True)
    tau = 0.2
    terms = [-math.log(math.exp(qn[i] @ kn[i] / tau) / sum(math.exp(qn[i] @ kn[j] / tau) for j in range(6)))
             for i in range(6)]
    assert MoCoV3Loss()(q, k).item() == pytest.approx(2 * tau * sum(terms) / 6, rel=1e-5)
    assert MoCoV3Loss().temperature == 0.2
    with pytest.raises(ValueError, match="temperature"):
        MoCoV3Loss(0.0)
