"""The self-supervised losses: NT-Xent (SimCLR), normalised MSE (BYOL) and EquiMod's equivariance loss.

Plain modules: they take embeddings and return a scalar, gather across ranks themselves, and know
nothing of the training loop. Every loss runs in float32 whatever the autocast dtype, because
exp(logit / temperature) in bf16 / fp16 loses the small differences the losses live on: autocast
is switched off inside and the inputs are cast up.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from equimod_zoo.errors import UserError
from equimod_zoo.training.distributed import gather_with_grad, get_rank


def _check_pair(a: Tensor, b: Tensor, names: str) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise UserError(f"{names} must both be (N, D) with the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross entropy (Chen et al. 2020), 2N-way, all-gathered negatives.

    Inputs: z_a, z_b (n, D), row i of both from the same image (a positive pair), n per rank.
    With N = world_size * n the gathered batch holds 2N embeddings. Each of the 2n local
    embeddings is an anchor whose positive is its partner and whose negatives are the 2N - 2
    other gathered embeddings (both views of every other image, on every rank); its own
    similarity is masked out. The loss is the mean cross entropy over the local anchors: summed
    over ranks by the gather's backward and averaged by DDP, the gradients equal those of one
    process on the global batch. Every rank must pass the same n. Output: a scalar.
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if temperature <= 0:
            raise UserError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        _check_pair(z_a, z_b, "z_a and z_b")
        with torch.autocast(z_a.device.type, enabled=False):
            return self._loss(z_a, z_b)

    def _loss(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        n = z_a.shape[0]
        anchors = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)  # (2n, D)
        candidates = gather_with_grad(anchors)  # (2N, D): [a, b] of rank 0, then of rank 1, ...
        logits = anchors @ candidates.T / self.temperature  # (2n, 2N)

        # This rank's anchors sit at rank * 2n in the gathered batch; a_i's partner is b_i, n rows on.
        offset = get_rank() * 2 * n
        rows = torch.arange(2 * n, device=anchors.device)
        positive = offset + (rows + n) % (2 * n)
        # Mask each anchor's own similarity; the fill value is a kernel argument, not a tensor
        # copied from the host every step.
        columns = torch.arange(logits.shape[1], device=anchors.device)
        logits = logits.masked_fill(columns.unsqueeze(0) == (offset + rows).unsqueeze(1), float("-inf"))
        return F.cross_entropy(logits, positive)


class BYOLLoss(nn.Module):
    """BYOL's regression loss (Grill et al. 2020): the normalised MSE 2 - 2 cos(p, z), batch mean.

    Inputs: prediction p (N, D) from the online network, target z (N, D) from the target network
    (computed without gradient by the caller). Output: a scalar in [0, 4]. Per-sample, so no
    gather is needed across ranks.
    """

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        _check_pair(prediction, target, "prediction and target")
        with torch.autocast(prediction.device.type, enabled=False):
            cos = F.cosine_similarity(prediction.float(), target.float(), dim=1)
        return (2 - 2 * cos).mean()


class EquiModLoss(nn.Module):
    """EquiMod's equivariance loss (Devillers & Lefort 2023): NT-Xent between y_t and y_hat_t.

    Inputs: y1, y2 (n, D), the g_eq embeddings of the two augmented views, and y_hat1, y_hat2
    (n, D), their predictions u([y0, g_t(p_t)]) from the un-augmented image. The 2n pairs
    (y_t[i], y_hat_t[i]) for t in {1, 2} go through `NTXentLoss`: the positive of y_hat_t[i] is
    y_t[i] (same image, same view) and vice versa; the negatives are all 4N - 2 other embeddings
    of the all-gathered set {y1, y2, y_hat1, y_hat2} (N images over all ranks), including the other
    view's y and y_hat of the same image. Output: a scalar.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.ntxent = NTXentLoss(temperature)

    @property
    def temperature(self) -> float:
        return self.ntxent.temperature

    def forward(self, y1: Tensor, y2: Tensor, y_hat1: Tensor, y_hat2: Tensor) -> Tensor:
        _check_pair(y1, y2, "y1 and y2")
        _check_pair(y_hat1, y_hat2, "y_hat1 and y_hat2")
        return self.ntxent(torch.cat([y1, y2]), torch.cat([y_hat1, y_hat2]))


@torch.no_grad()
def equivariance_gain(y0: Tensor, y1: Tensor, y2: Tensor, y_hat1: Tensor, y_hat2: Tensor) -> Tensor:
    """mean cos(y_t, y_hat_t) - mean cos(y_t, y0) over t in {1, 2} and the batch (a detached scalar).

    Positive when the predictor really anticipates how the augmentation moves the embedding,
    rather than the module collapsing to invariance (y_hat_t = y0).
    """
    y0, y1, y2, y_hat1, y_hat2 = (t.float() for t in (y0, y1, y2, y_hat1, y_hat2))
    with torch.autocast(y0.device.type, enabled=False):
        predicted = torch.cat([F.cosine_similarity(y1, y_hat1, dim=1), F.cosine_similarity(y2, y_hat2, dim=1)])
        original = torch.cat([F.cosine_similarity(y1, y0, dim=1), F.cosine_similarity(y2, y0, dim=1)])
    return predicted.mean() - original.mean()
