"""Projection, prediction and equivariance heads of the base methods and of EquiMod.

Every head is a `ProjectionHead`: a stack of (in, out, norm, activation) blocks, each a linear
layer followed by an optional normalisation and an optional activation. A linear layer that feeds
a normalisation carries no bias (the norm's shift, or its mean subtraction, makes it redundant);
a block may state its bias as a fifth entry (VICReg's and Barlow Twins' last layers have none).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

# (in_dim, out_dim, norm, activation), optionally followed by the linear layer's bias (default: no norm)
Block = tuple[int, int, nn.Module | None, nn.Module | None] | tuple[int, int, nn.Module | None, nn.Module | None, bool]


class ProjectionHead(nn.Module):
    """A multi-layer perceptron built from (in_dim, out_dim, norm, activation) blocks.

    Input: (N, blocks[0].in_dim). Output: (N, blocks[-1].out_dim).
    """

    def __init__(self, blocks: Sequence[Block]) -> None:
        super().__init__()
        if not blocks:
            raise ValueError("ProjectionHead needs at least one block")
        layers: list[nn.Module] = []
        for in_dim, out_dim, norm, activation, *bias in blocks:
            layers.append(nn.Linear(in_dim, out_dim, bias=bias[0] if bias else norm is None))
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


class VICRegProjectionHead(ProjectionHead):
    """VICReg's expander: h -> z, where the variance, invariance and covariance terms apply.

    Bardes, Ponce & LeCun (2022), "VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning": the expander has three fully-connected layers, batch normalisation
    and a ReLU after the first two, 8192 wide on ImageNet (the CIFAR-10 recipes use 2048, as
    solo-learn does). The last layer has no bias, as in the reference code.
    """

    def __init__(self, input_dim: int, *, hidden_dim: int = 8192, output_dim: int = 8192) -> None:
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)),
                (hidden_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)),
                (hidden_dim, output_dim, None, None, False),
            ]
        )


class BarlowTwinsProjectionHead(VICRegProjectionHead):
    """Barlow Twins' projector: h -> z, whose cross-correlation across the two views is driven to I.

    Zbontar, Jing, Misra, LeCun & Deny (2021), "Barlow Twins: Self-Supervised Learning via
    Redundancy Reduction": "The projector network has three linear layers, each with 8192 output
    units. The first two layers of the projector are followed by a batch normalization layer and
    rectified linear units." The reference code's linear layers have no bias; the batch
    standardisation of z before the cross-correlation is part of `BarlowTwinsLoss`.
    """


class MoCoV3ProjectionHead(ProjectionHead):
    """MoCo v3's projector: h -> z, on the online encoder and its momentum copy.

    Chen, Xie & He (2021), "An Empirical Study of Training Self-Supervised Vision Transformers": the
    projection head is an MLP with BN after every layer, ReLU after the hidden ones, 4096 hidden and
    256 output units; the output BN has no affine parameters. The reference code uses 2 layers on a
    ResNet and 3 on a ViT (`num_layers`).
    """

    def __init__(self, input_dim: int, *, hidden_dim: int = 4096, output_dim: int = 256, num_layers: int = 2) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        widths = [input_dim, *[hidden_dim] * (num_layers - 1), output_dim]
        super().__init__(
            [(a, b, nn.BatchNorm1d(b), nn.ReLU(inplace=True)) for a, b in zip(widths[:-2], widths[1:-1])]
            + [(widths[-2], widths[-1], nn.BatchNorm1d(widths[-1], affine=False), None)]
        )


class MoCoV3PredictionHead(MoCoV3ProjectionHead):
    """MoCo v3's predictor: z -> q, on the online encoder only (2 layers, 4096 hidden, BN after each)."""

    def __init__(self, input_dim: int = 256, *, hidden_dim: int = 4096, output_dim: int = 256) -> None:
        super().__init__(input_dim, hidden_dim=hidden_dim, output_dim=output_dim, num_layers=2)
