"""The weighted k-nearest-neighbour classifier of self-supervised papers.

Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination" (CVPR 2018):
"we identify its top k nearest neighbors [...] each class c gets a total weight
w_c = sum_i exp(s_i / tau) * 1(c_i = c)", with cosine similarity s_i on L2-normalised features,
k = 200 and tau = 0.07 to 0.1 in the papers that followed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from equimod_zoo.devices import resolve_device
from equimod_zoo.errors import UserError
from equimod_zoo.probes.linear import ArrayLike, _features, _labels, _same_length
from equimod_zoo.probes.metrics import classification_scores


@dataclass(frozen=True)
class KnnResult:
    """Test scores in percent and the classifier's settings."""

    top1: float
    top5: float
    mean_per_class_accuracy: float
    k: int  # neighbours actually used (capped at the training set size)
    temperature: float
    train_size: int
    test_size: int
    num_classes: int

    def to_dict(self) -> dict:
        return asdict(self)


def knn_probe(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    *,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> KnnResult:
    """Classify each test row by the exp(cosine / temperature)-weighted votes of its k nearest training rows.

    Test rows are processed `batch_size` at a time, so memory stays at batch_size x N_train.
    """
    if k < 1 or temperature <= 0 or batch_size < 1:
        raise UserError(f"need k >= 1, temperature > 0 and batch_size >= 1, got k={k}, "
                        f"temperature={temperature}, batch_size={batch_size}")
    device = resolve_device(device, argument="device")
    train_x, train_y = _features(train_x, "train_x"), _labels(train_y, "train_y")
    test_x, test_y = _features(test_x, "test_x"), _labels(test_y, "test_y")
    _same_length(train_x, train_y, "train")
    _same_length(test_x, test_y, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise UserError(f"train features have width {train_x.shape[1]}, test features {test_x.shape[1]}")
    largest = int(max(train_y.max(), test_y.max()))
    num_classes = num_classes or largest + 1
    if largest >= num_classes:
        raise UserError(f"labels go up to {largest} but num_classes={num_classes}")
    k = min(k, len(train_x))

    bank = F.normalize(train_x.to(device=device, dtype=torch.float32), dim=1)
    bank_labels = train_y.to(device)
    votes = []
    for start in range(0, len(test_x), batch_size):
        queries = F.normalize(test_x[start:start + batch_size].to(device=device, dtype=torch.float32), dim=1)
        similarity, index = (queries @ bank.T).topk(k, dim=1)
        # exp((s - s_max) / T) is exp(s / T) over a per-row constant: the same vote, no overflow at small T
        weights = ((similarity - similarity[:, :1]) / temperature).exp()
        class_votes = torch.zeros(len(queries), num_classes, device=device)
        class_votes.scatter_add_(1, bank_labels[index], weights)
        votes.append(class_votes.cpu())
    scores = classification_scores(torch.cat(votes), test_y)
    return KnnResult(**scores.to_dict(), k=k, temperature=temperature, train_size=len(train_x),
                     test_size=len(test_x), num_classes=num_classes)
