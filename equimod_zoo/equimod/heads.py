"""Projection, prediction and equivariance heads of SimCLR, BYOL and EquiMod.

Every head is a `ProjectionHead`: a stack of (in, out, norm, activation) blocks, each a linear
layer followed by an optional normalisation and an optional activation. A linear layer that feeds
a normalisation carries no bias (the norm's shift, or its mean subtraction, makes it redundant).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from equimod_zoo.errors import UserError

Block = tuple[int, int, nn.Module | None, nn.Module | None]  # (in_dim, out_dim, norm, activation)


class ProjectionHead(nn.Module):
    """A multi-layer perceptron built from (in_dim, out_dim, norm, activation) blocks.

    Input: (N, blocks[0].in_dim). Output: (N, blocks[-1].out_dim).
    """

    def __init__(self, blocks: Sequence[Block]) -> None:
        super().__init__()
        if not blocks:
            raise UserError("ProjectionHead needs at least one block")
        layers: list[nn.Module] = []
        for in_dim, out_dim, norm, activation in blocks:
            layers.append(nn.Linear(in_dim, out_dim, bias=norm is None))
            layers.extend(m for m in (norm, activation) if m is not None)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    @property
    def widths(self) -> tuple[int, ...]:
        """(in_dim, out_dim of each block): the sizes a heads schema records."""
        linear = [m for m in self.layers if isinstance(m, nn.Linear)]
        return (linear[0].in_features, *(m.out_features for m in linear))


class SimCLRProjectionHead(ProjectionHead):
    """SimCLR's projection head g: h -> z, where the contrastive loss is applied.

    Chen et al. (2020), "A Simple Framework for Contrastive Learning of Visual Representations":
    a small MLP maps the representation to the space of the contrastive loss, and the
    representation *before* it transfers better than the output. Here 2048-2048-128 with BN after
    every layer (the last one without affine parameters), as in EquiMod's SimCLR recipe.
    """

    def __init__(self, input_dim: int, *, hidden_dim: int = 2048, output_dim: int = 128) -> None:
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)),
                (hidden_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)),
                (hidden_dim, output_dim, nn.BatchNorm1d(output_dim, affine=False), None),
            ]
        )


class BYOLProjectionHead(ProjectionHead):
    """BYOL's projector: h -> z, shared in shape by the online and the target network.

    Grill et al. (2020), "Bootstrap Your Own Latent": the projection is an MLP with one hidden
    layer of 4096 units followed by batch normalisation and a ReLU, then a linear output of 256.
    """

    def __init__(self, input_dim: int, *, hidden_dim: int = 4096, output_dim: int = 256) -> None:
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)),
                (hidden_dim, output_dim, None, None),
            ]
        )


class BYOLPredictionHead(BYOLProjectionHead):
    """BYOL's predictor q: z -> q(z), on the online network only.

    Grill et al. (2020): the online network alone gets a predictor, with the same architecture as
    the projector, which regresses the target's projection; the asymmetry prevents collapse.
    """

    def __init__(self, input_dim: int = 256, *, hidden_dim: int = 4096, output_dim: int = 256) -> None:
        super().__init__(input_dim, hidden_dim=hidden_dim, output_dim=output_dim)


class EquiModProjectionHead(SimCLRProjectionHead):
    """EquiMod's equivariant projection g_eq: h -> y, the space where augmentations act.

    Devillers & Lefort (2023), "EquiMod: An Equivariance Module to Improve Visual Instance
    Discrimination": a second projection head, beside the invariant one, maps each representation
    to a latent space in which the effect of an augmentation is to be predicted rather than
    removed. The architecture of SimCLR's projector: three bias-free linear layers, BN after each,
    ReLU after the first two, and no affine parameters on the last BN.
    """


class AugmentationEmbedding(ProjectionHead):
    """EquiMod's g_t: the standardised augmentation parameters p -> an embedding a.

    Devillers & Lefort (2023): the parameters describing the sampled augmentation are projected
    into a latent vector before the equivariant predictor sees them. One bias-free linear layer
    and a BN; the per-dataset standardisation of p happens before, in the method.
    """

    def __init__(self, param_dim: int = 18, *, output_dim: int = 128) -> None:
        super().__init__([(param_dim, output_dim, nn.BatchNorm1d(output_dim), None)])


class EquivariantPredictor(ProjectionHead):
    """EquiMod's u: ([y0, a_t]) -> y_hat_t, the predicted embedding of the augmented view.

    Devillers & Lefort (2023): the equivariant predictor takes the embedding of the original image
    together with the embedding of the augmentation and predicts the embedding of the augmented
    image, so that the representation moves predictably under each augmentation. One bias-free
    linear layer on the concatenation and a BN without affine parameters.

    Input: y0 (N, embed_dim) and a (N, param_embed_dim). Output: (N, embed_dim).
    """

    def __init__(self, embed_dim: int = 128, param_embed_dim: int = 128) -> None:
        super().__init__(
            [(embed_dim + param_embed_dim, embed_dim, nn.BatchNorm1d(embed_dim, affine=False), None)]
        )

    def forward(self, y0: Tensor, a: Tensor) -> Tensor:  # type: ignore[override]
        return self.layers(torch.cat([y0, a], dim=1))


class EquiModHeads(nn.Module):
    """EquiMod's g_eq, g_t and u with the parameter standardisation, for inference (eval mode).

    y0 = g_eq(f(x0)), y_t = g_eq(f(x_t)), y_hat_t = u([y0, g_t((p_t - param_mean) / param_std)]);
    `param_names` says which augmentation parameter each column of p_t is.
    """

    def __init__(self, g_eq: EquiModProjectionHead, g_t: AugmentationEmbedding, u: EquivariantPredictor,
                 param_mean: Tensor, param_std: Tensor, param_names: Sequence[str]) -> None:
        super().__init__()
        if param_mean.shape != (len(param_names),) or param_std.shape != (len(param_names),):
            raise UserError(f"param_mean and param_std must have {len(param_names)} entries, one per parameter "
                            f"name, got {tuple(param_mean.shape)} and {tuple(param_std.shape)}")
        self.g_eq, self.g_t, self.u = g_eq, g_t, u
        self.param_names = tuple(param_names)
        self.register_buffer("param_mean", param_mean.float())
        self.register_buffer("param_std", param_std.float())
        self.eval()

    @torch.inference_mode()
    def embed(self, features: Tensor) -> Tensor:
        return self.g_eq(features.to(self.param_mean))

    @torch.inference_mode()
    def predict(self, y0: Tensor, params: Tensor) -> Tensor:
        """y_hat_t from y0 and the raw parameter vectors ([n, len(param_names)])."""
        if params.shape[-1] != len(self.param_names):
            raise UserError(f"params must have {len(self.param_names)} columns ({', '.join(self.param_names)}), "
                            f"got {params.shape[-1]}")
        a = self.g_t((params.to(self.param_mean) - self.param_mean) / self.param_std)
        return self.u(y0, a)
