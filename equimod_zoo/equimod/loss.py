"""EquiMod's equivariance loss, the NT-Xent it is made of, and the eq-gain diagnostic.

Plain modules: they take embeddings and return a scalar, gather across processes themselves
(`equimod_zoo.equimod.distributed`), and know nothing of the training loop or of the invariance
method beside them. They run in float32 whatever the autocast dtype: exp(logit / temperature)
in bf16 / fp16 loses the small differences the losses live on, so autocast is switched off
inside and the inputs are cast up.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from equimod_zoo.equimod.distributed import gather_with_grad, get_rank


def check_pair(a: Tensor, b: Tensor, names: str) -> None:
    """Two (N, D) embeddings of the same shape, row i of each from the same image."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"{names} must both be (N, D) with the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross entropy (Chen et al. 2020), 2N-way, all-gathered negatives.

    "We randomly sample a minibatch of N examples and define the contrastive prediction task on
    pairs of augmented examples derived from the minibatch, resulting in 2N data points [...]
    we treat the other 2(N - 1) augmented examples within a minibatch as negative examples."
    (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", 2020.)

    Inputs: z_a, z_b (n, D), row i of both a positive pair, n per rank. With N = world_size * n
    the gathered batch holds 2N embeddings. Each of the 2n local embeddings is an anchor whose
    positive is its partner and whose negatives are the 2N - 2 other gathered embeddings; its own
    similarity is masked out. The loss is the mean cross entropy over the local anchors: summed
    over ranks by the gather's backward and averaged by DDP, the gradients equal those of one
    process on the global batch. Every rank must pass the same n. Output: a scalar.
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        check_pair(z_a, z_b, "z_a and z_b")
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


class EquiModLoss(NTXentLoss):
    """EquiMod's equivariance loss: NT-Xent between each augmented view's embedding and its prediction.

    Devillers & Lefort, "EquiMod: An Equivariance Module to Improve Visual Instance
    Discrimination" (ICLR 2023): in the equivariant latent space the positive pair is an augmented
    view's embedding y_t and its prediction y_hat_t = u([y0, g_t(p_t)]) from the original image and
    the augmentation's parameters, and the other embeddings and predictions of the batch are the
    negatives of an NT-Xent loss at temperature 0.2.

    Inputs: y (m, D), the g_eq embeddings of the augmented views, and y_hat (m, D), their
    predictions u([y0, g_t(p)]) from the un-augmented image, row for row. Any number of views
    stack along the batch (`torch.cat([y1, y2])` and `torch.cat([y_hat1, y_hat2])`): every other
    embedding of the all-gathered set {y, y_hat}, other views of the same image included, is a
    negative. Output: a scalar.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__(temperature)

    def forward(self, y: Tensor, y_hat: Tensor) -> Tensor:  # type: ignore[override]
        check_pair(y, y_hat, "y and y_hat")
        return super().forward(y, y_hat)


@torch.no_grad()
def equivariance_gain(y0: Tensor, y: Tensor, y_hat: Tensor) -> Tensor:
    """mean cos(y, y_hat) - mean cos(y, y0), a detached scalar: does u predict the displacement?

    y0 (n, D) embeds the un-augmented images; y and y_hat (V * n, D) are the augmented views'
    embeddings and predictions, views stacked as for `EquiModLoss` (y0 is repeated per view).
    Positive when the predictor anticipates how the augmentation moves the embedding, rather than
    the module collapsing to invariance (y_hat = y0, gain 0).
    """
    check_pair(y, y_hat, "y and y_hat")
    if y0.ndim != 2 or y0.shape[1] != y.shape[1] or y.shape[0] % y0.shape[0]:
        raise ValueError(f"y0 must be (n, D) with y (V * n, D), got {tuple(y0.shape)} and {tuple(y.shape)}")
    with torch.autocast(y0.device.type, enabled=False):
        y0, y, y_hat = y0.float(), y.float(), y_hat.float()
        original = y0.repeat(y.shape[0] // y0.shape[0], 1)
        return F.cosine_similarity(y, y_hat, dim=1).mean() - F.cosine_similarity(y, original, dim=1).mean()
