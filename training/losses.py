"""The base methods' invariance losses: BYOL's normalised MSE, VICReg's and Barlow Twins' redundancy terms,
MoCo v3's contrastive loss against momentum keys.

SimCLR's NT-Xent and EquiMod's equivariance loss live in the core (`equimod_zoo.equimod.loss`),
beside the building blocks a user's own training loop takes. Like them, these are plain modules:
they take embeddings and return a scalar, gather across processes as each paper's distributed
version does, and run in float32 whatever the autocast dtype (autocast off inside, inputs cast up):
batch statistics and cross-correlations in bf16 lose the small differences the losses live on.

Distributed training: every rank passes the same number n of rows. A term over the whole batch is
computed on the gathered (or all-reduced) tensors, identically on every rank; the collectives'
backward hands each rank world_size times its share of the gradient, and DDP's averaging of the
parameter gradients divides it back, so the update equals one process on the global batch
(tests/test_ddp.py checks it for every loss).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from equimod_zoo.equimod.distributed import all_reduce_with_grad, gather_with_grad, get_rank, get_world_size
from equimod_zoo.equimod.loss import check_pair


class BYOLLoss(nn.Module):
    """BYOL's regression loss (Grill et al. 2020): the normalised MSE 2 - 2 cos(p, z), batch mean.

    Inputs: prediction p (N, D) from the online network, target z (N, D) from the target network
    (computed without gradient by the caller). Output: a scalar in [0, 4]. Per-sample, so no
    gather is needed across ranks.
    """

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        check_pair(prediction, target, "prediction and target")
        with torch.autocast(prediction.device.type, enabled=False):
            cos = F.cosine_similarity(prediction.float(), target.float(), dim=1)
        return (2 - 2 * cos).mean()


class VICRegLoss(nn.Module):
    """VICReg (Bardes, Ponce & LeCun, ICLR 2022): invariance, variance and covariance terms.

    l(Z, Z') = lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')], where, over a batch of N
    embeddings of dimension d,
    - s(Z, Z') = 1/N sum_i ||z_i - z'_i||^2, the pairs' mean squared distance;
    - v(Z) = 1/d sum_j max(0, gamma - S(z^j, eps)), S(x, eps) = sqrt(Var(x) + eps), gamma = 1;
    - c(Z) = 1/d sum_{i != j} [C(Z)]_{i,j}^2, C(Z) the covariance matrix 1/(N-1) sum (z - z_bar)(z - z_bar)^T.
    The reference code, whose defaults lambda = mu = 25, nu = 1, eps = 1e-4 are ours, differs from
    the written formula in two scales, and so do we: s is also averaged over the d dimensions
    (`F.mse_loss`), and the variance term is halved, mu [v(Z) + v(Z')] / 2. The invariance term is per pair, on
    each rank's own rows; variance and covariance are over the batch gathered from every rank, as
    in the reference's distributed version.

    Inputs: z_a, z_b (n, d), row i of both from the same image. Output: a scalar.
    """

    def __init__(self, *, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0,
                 eps: float = 1e-4) -> None:
        super().__init__()
        if min(sim_weight, var_weight, cov_weight) < 0 or eps <= 0:
            raise ValueError(f"VICReg weights must be >= 0 and eps > 0, got {sim_weight}, {var_weight}, "
                             f"{cov_weight} and {eps}")
        self.sim_weight, self.var_weight, self.cov_weight, self.eps = sim_weight, var_weight, cov_weight, eps

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        check_pair(z_a, z_b, "z_a and z_b")
        with torch.autocast(z_a.device.type, enabled=False):
            z_a, z_b = z_a.float(), z_b.float()
            invariance = F.mse_loss(z_a, z_b)
            z_a, z_b = gather_with_grad(z_a), gather_with_grad(z_b)
            if z_a.shape[0] < 2:
                raise ValueError("VICReg's variance needs at least 2 embeddings in the (gathered) batch")
            variance = (self._variance(z_a) + self._variance(z_b)) / 2
            covariance = self._covariance(z_a) + self._covariance(z_b)
        return self.sim_weight * invariance + self.var_weight * variance + self.cov_weight * covariance

    def _variance(self, z: Tensor) -> Tensor:
        std = torch.sqrt(z.var(dim=0) + self.eps)
        return F.relu(1 - std).mean()

    @staticmethod
    def _covariance(z: Tensor) -> Tensor:
        n, d = z.shape
        z = z - z.mean(dim=0)
        cov = z.T @ z / (n - 1)
        return off_diagonal_square_sum(cov) / d


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins (Zbontar et al., ICML 2021): the cross-correlation of the two views driven to the identity.

    L = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2, where C is the cross-correlation
    matrix of the two views' embeddings, each dimension standardised over the batch:
    C_ij = sum_b z^A_{b,i} z^B_{b,j} / N for standardised z. The standardisation is the reference
    code's batch normalisation without affine parameters (biased variance, eps 1e-5); lambda =
    0.0051 is the reference code's value (the paper's 5e-3, rounded). `scale` multiplies the whole
    loss (1 in the paper; solo-learn scales it by 0.1 on CIFAR). Under several processes the
    batch statistics and C are all-reduced, as the reference all-reduces C.

    Inputs: z_a, z_b (n, d), row i of both from the same image. Output: a scalar.
    """

    def __init__(self, *, lambda_: float = 0.0051, scale: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__()
        if lambda_ < 0 or scale <= 0 or eps <= 0:
            raise ValueError(f"Barlow Twins needs lambda >= 0, scale > 0 and eps > 0, got {lambda_}, {scale}, {eps}")
        self.lambda_, self.scale, self.eps = lambda_, scale, eps

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        check_pair(z_a, z_b, "z_a and z_b")
        with torch.autocast(z_a.device.type, enabled=False):
            total = z_a.shape[0] * get_world_size()
            a, b = self._standardise(z_a.float(), total), self._standardise(z_b.float(), total)
            c = all_reduce_with_grad(a.T @ b) / total
            on_diagonal = (torch.diagonal(c) - 1).pow(2).sum()
        return self.scale * (on_diagonal + self.lambda_ * off_diagonal_square_sum(c))

    def _standardise(self, z: Tensor, total: int) -> Tensor:
        """(z - mean) / sqrt(var + eps), mean and (biased) variance over the batch of every rank."""
        mean = all_reduce_with_grad(z.sum(dim=0)) / total
        centred = z - mean
        variance = all_reduce_with_grad(centred.pow(2).sum(dim=0)) / total
        return centred / torch.sqrt(variance + self.eps)


class MoCoV3Loss(nn.Module):
    """MoCo v3's contrastive loss (Chen, Xie & He, ICCV 2021): each query against every key of the batch.

    ctr(q, k) = -1/n sum_i log [exp(q_i . k_i / tau) / sum_j exp(q_i . k_j / tau)], times 2 tau, with q and
    k l2-normalised: "the keys that naturally co-exist in the same batch" are the negatives, and the
    positive of a query is the key of the same image's other view. The 2 tau factor and tau = 0.2 (the
    ViT setting; solo-learn's CIFAR-10 one) follow the reference code, as does the gather: the keys of
    every rank (computed without gradient by the caller's momentum encoder) are candidates for this
    rank's queries, whose positives sit at rank * n.

    Inputs: q (n, d) from the online predictor, k (n, d) from the momentum encoder. Output: a scalar.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        check_pair(q, k, "q and k")
        with torch.autocast(q.device.type, enabled=False):
            q = F.normalize(q.float(), dim=1)
            keys = gather_with_grad(F.normalize(k.float(), dim=1))
            logits = q @ keys.T / self.temperature
            labels = torch.arange(q.shape[0], device=q.device) + get_rank() * q.shape[0]
            return F.cross_entropy(logits, labels) * (2 * self.temperature)


def off_diagonal_square_sum(matrix: Tensor) -> Tensor:
    """The sum of the squares of a square matrix's off-diagonal entries."""
    return (matrix - torch.diag_embed(torch.diagonal(matrix))).pow(2).sum()
