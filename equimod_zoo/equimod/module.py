"""EquiMod, the equivariance module, as one `nn.Module` beside any invariance method and any backbone.

Devillers & Lefort (ICLR 2023, arXiv:2211.01244) call EquiMod "a generic equivariance module":
besides the invariance loss of the base method, a second head g_eq maps the representation h to a
latent space where an augmentation must *move* the embedding predictably. From the original
image's embedding y0 and the augmentation's parameters p_t, the predictor u anticipates the
augmented view's embedding, y_hat_t = u([y0, g_t(p_t)]), and `EquiModLoss` pulls y_hat_t towards
y_t = g_eq(h_t) among the other embeddings of the batch.

The contract is independent of the base method: the module takes the backbone's features of the
un-augmented images (h0) and of each augmented view (h_t), with each view's parameter vector
(p_t, as `BatchedAugment` returns it), and returns its loss, which the caller adds to its own:

    total = invariance_loss + weight * equimod(h0, [h1, h2], [p1, p2]).loss

The parameters are standardised with `param_mean` / `param_std` (their statistics under the
training augmentations, `parameter_statistics`) before g_t.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from equimod_zoo.equimod.heads import AugmentationEmbedding, EquiModProjectionHead, EquivariantPredictor
from equimod_zoo.equimod.loss import EquiModLoss, equivariance_gain


@dataclass
class EquiModOutput:
    """The equivariance loss (to add, weighted, to the invariance loss) and the detached eq-gain."""

    loss: Tensor
    gain: Tensor


class EquiMod(nn.Module):
    """g_eq, g_t, u, the parameter standardisation and the equivariance loss.

    Args:
        input_dim: the backbone's feature size (timm's `num_features`).
        param_dim: the length of the augmentation parameter vector.
        param_mean, param_std: (param_dim,) statistics standardising the parameters; 0 and 1 by default.
        param_names: what each entry of the parameter vector is (recorded with exported heads).
        hidden_dim, output_dim: g_eq's hidden and output widths (the paper's 2048 and 128).
        param_embed_dim: g_t's output width (128).
        temperature: the NT-Xent temperature of the equivariance loss (0.2).
    """

    def __init__(self, input_dim: int, *, param_dim: int, param_mean: Tensor | None = None,
                 param_std: Tensor | None = None, param_names: Sequence[str] = (), hidden_dim: int = 2048,
                 output_dim: int = 128, param_embed_dim: int = 128, temperature: float = 0.2) -> None:
        super().__init__()
        if param_names and len(param_names) != param_dim:
            raise ValueError(f"param_names has {len(param_names)} entries, param_dim is {param_dim}")
        self.param_names = tuple(param_names)
        self.g_eq = EquiModProjectionHead(input_dim, hidden_dim=hidden_dim, output_dim=output_dim)
        self.g_t = AugmentationEmbedding(param_dim, output_dim=param_embed_dim)
        self.u = EquivariantPredictor(output_dim, param_embed_dim)
        self.loss = EquiModLoss(temperature)
        mean = torch.zeros(param_dim) if param_mean is None else _statistic(param_mean, "param_mean", param_dim)
        std = torch.ones(param_dim) if param_std is None else _statistic(param_std, "param_std", param_dim)
        if not bool((std > 0).all()):
            raise ValueError("param_std must be positive in every entry (a constant parameter has std 0: use 1)")
        self.register_buffer("param_mean", mean)
        self.register_buffer("param_std", std)

    @property
    def param_dim(self) -> int:
        return self.param_mean.shape[0]

    def embed(self, h: Tensor) -> Tensor:
        """y = g_eq(h): features (N, input_dim) -> the equivariant embedding (N, output_dim)."""
        return self.g_eq(h.to(self.param_mean.dtype) if h.dtype != self.param_mean.dtype else h)

    def predict(self, y0: Tensor, params: Tensor) -> Tensor:
        """y_hat = u([y0, g_t((params - mean) / std)]) from y0 (N, output_dim) and raw params (N, param_dim)."""
        if params.ndim != 2 or params.shape[1] != self.param_dim or params.shape[0] != y0.shape[0]:
            raise ValueError(f"params must be ({y0.shape[0]}, {self.param_dim})"
                             + (f" ({', '.join(self.param_names)})" if self.param_names else "")
                             + f", got {tuple(params.shape)}")
        a = self.g_t((params.to(self.param_mean.dtype) - self.param_mean) / self.param_std)
        return self.u(y0, a)

    def forward(self, h0: Tensor, views: Sequence[Tensor], params: Sequence[Tensor]) -> EquiModOutput:
        """The loss over every view: h0 (n, input_dim), views[t] (n, input_dim), params[t] (n, param_dim).

        Each head sees all its inputs in one call (g_eq: the views and h0; g_t and u: the views),
        so BatchNorm normalises over them together, as the reference implementation does.
        """
        if len(views) != len(params) or not views:
            raise ValueError(f"give one parameter tensor per view, got {len(views)} views and {len(params)}")
        n = h0.shape[0]
        if any(h.shape != h0.shape for h in views):
            raise ValueError(f"every view's features must have h0's shape {tuple(h0.shape)}, "
                             f"got {[tuple(h.shape) for h in views]}")
        *ys, y0 = self.embed(torch.cat([*views, h0])).split(n)
        y = torch.cat(ys)
        y_hat = self.predict(y0.repeat(len(views), 1), torch.cat(list(params)))
        return EquiModOutput(loss=self.loss(y, y_hat), gain=equivariance_gain(y0, y, y_hat))


def _statistic(value: Tensor, name: str, param_dim: int) -> Tensor:
    value = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    if value.shape != (param_dim,):
        raise ValueError(f"{name} must have shape ({param_dim},), got {tuple(value.shape)}")
    return value
