"""Classification metrics of the probes, in percent: top-1, top-5 and mean per-class accuracy."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from equimod_zoo.errors import UserError


@dataclass(frozen=True)
class ClassificationScores:
    """The three numbers every probe reports, in percent."""

    top1: float
    top5: float
    mean_per_class_accuracy: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def topk_accuracy(scores: torch.Tensor, targets: torch.Tensor, k: int = 1) -> float:
    """Percent of rows whose target is among the `k` highest scores (k is capped at the class count)."""
    _check(scores, targets)
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return 100.0 * (top == targets[:, None]).any(dim=1).double().mean().item()


def mean_per_class_accuracy(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """The accuracy of each class present in `targets`, averaged with equal weight per class.

    The official metric of Flowers-102, Oxford-IIIT Pets and Caltech-101, where the test classes
    are unbalanced: a rare class counts as much as a frequent one.
    """
    predictions, targets = predictions.reshape(-1).long(), targets.reshape(-1).long()
    if predictions.shape != targets.shape or targets.numel() == 0:
        raise UserError(f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} must be "
                        f"non-empty and of the same length")
    classes, inverse = targets.unique(return_inverse=True)
    correct = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, inverse, (predictions == targets).double())
    counts = torch.bincount(inverse, minlength=len(classes)).double()
    return 100.0 * (correct / counts).mean().item()


def classification_scores(scores: torch.Tensor, targets: torch.Tensor) -> ClassificationScores:
    """Top-1, top-5 and mean per-class accuracy of class scores (N, K) against integer targets (N,)."""
    _check(scores, targets)
    return ClassificationScores(
        top1=topk_accuracy(scores, targets, 1),
        top5=topk_accuracy(scores, targets, 5),
        mean_per_class_accuracy=mean_per_class_accuracy(scores.argmax(dim=1), targets),
    )


def _check(scores: torch.Tensor, targets: torch.Tensor) -> None:
    if scores.ndim != 2 or targets.ndim != 1 or scores.shape[0] != targets.shape[0] or scores.shape[0] == 0:
        raise UserError(f"scores must be (N, K) and targets (N,) with N > 0, got {tuple(scores.shape)} and "
                        f"{tuple(targets.shape)}")
