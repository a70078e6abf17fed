"""The linear probe: L2-regularised multinomial logistic regression on frozen features, fit by L-BFGS.

Kornblith, Shlens & Le, "Do Better ImageNet Models Transfer Better?" (CVPR 2019), the protocol
SimCLR and BYOL report for transfer: "we trained an ℓ2-regularized multinomial logistic regression
classifier on features extracted from the frozen pretrained network. We used L-BFGS to optimize the
softmax cross-entropy objective and we did not apply data augmentation. [...] we selected the best
ℓ2 regularization parameter on the validation set."

The objective is ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (the bias is not penalised),
which is scikit-learn's ``LogisticRegression(C=1 / (weight_decay * n))`` on the same n samples.

Fast where a plain scikit-learn sweep is slow: the grid is walked from the strongest to the
weakest regularisation, each fit warm-started from the previous one; the sweep stops once the
validation score has fallen for `patience` strengths in a row (the weak end converges slowest and
rarely wins); the loss and its gradient are computed by hand, one matrix product each way, in
float32 on features standardised once per fit. `bench/linear_probe.py` times it against the
scikit-learn sweep on the same features.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch

from equimod_zoo.devices import resolve_device
from equimod_zoo.errors import UserError
from equimod_zoo.probes.metrics import classification_scores, mean_per_class_accuracy
from equimod_zoo.progress import progress_bar

# 13 values, a factor of about 4.6 apart: the range Kornblith et al. searched, on standardised features.
DEFAULT_GRID: tuple[float, ...] = tuple(float(v) for v in np.logspace(-6, 2, 13))

SelectMetric = Literal["top1", "mean_per_class_accuracy"]
ArrayLike = np.ndarray | torch.Tensor | Sequence


@dataclass(frozen=True)
class LinearProbeResult:
    """Test scores in percent, the chosen regularisation, and how it was chosen."""

    top1: float
    top5: float
    mean_per_class_accuracy: float
    weight_decay: float  # the chosen L2 strength (lambda); sklearn's C = 1 / (weight_decay * n)
    val_scores: dict[float, float]  # lambda -> validation score (select_metric, percent)
    select_metric: str
    train_size: int
    val_size: int
    test_size: int
    num_classes: int

    def to_dict(self) -> dict:
        data = asdict(self)
        data["val_scores"] = {f"{k:.3g}": v for k, v in self.val_scores.items()}
        return data


@dataclass
class LogisticRegressionFit:
    """A fitted classifier on standardised features: ``logits = ((x - mean) / std) @ weight + bias``."""

    weight: torch.Tensor  # (D, K)
    bias: torch.Tensor  # (K,)
    mean: torch.Tensor  # (D,)
    std: torch.Tensor  # (D,)
    iterations: int = 0  # L-BFGS iterations this fit took

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.weight)
        return ((x - self.mean) / self.std) @ self.weight + self.bias


def linear_probe(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    *,
    val_x: ArrayLike | None = None,
    val_y: ArrayLike | None = None,
    val_fraction: float = 0.2,
    grid: Sequence[float] = DEFAULT_GRID,
    select_metric: SelectMetric = "top1",
    num_classes: int | None = None,
    seed: int = 0,
    max_iter: int = 1000,
    tolerance_grad: float = 1e-4,
    patience: int | None = 2,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    progress: bool | str = False,
) -> LinearProbeResult:
    """Fit the linear probe with its regularisation chosen on a validation set; score it on the test set.

    Args:
        train_x, train_y: features (N, D) and integer labels (N,) to fit on.
        test_x, test_y: the held-out test set, used once, for the reported scores.
        val_x, val_y: an explicit validation set (e.g. a dataset's official one); without it a
            stratified `val_fraction` of train is held out (seeded by `seed`).
        grid: the L2 strengths (lambda) to try; each fit warm-starts from the previous, strongest first.
        select_metric: what the validation set maximises (ties go to the stronger regularisation).
        num_classes: defaults to the largest label + 1.
        max_iter: L-BFGS iterations per fit.
        tolerance_grad: each fit stops when no gradient entry exceeds this (scikit-learn's `tol`
            default, on the same mean-loss scale).
        patience: stop the sweep after this many weaker strengths in a row score below the best
            on validation (the weak end, where fits are slowest, is only explored while it helps);
            None tries the whole grid.
        dtype: float32 (default; features are standardised, so it loses nothing that the choice
            of lambda can see) or float64.
        device: defaults to CUDA when available.
        progress: show a bar over the fits (a string: what the bar says).

    After the choice, the probe is refit on train + validation with the chosen lambda.
    """
    device = resolve_device(device, argument="device")
    if select_metric not in ("top1", "mean_per_class_accuracy"):
        raise UserError(f"select_metric must be 'top1' or 'mean_per_class_accuracy', got {select_metric!r}")
    if not grid:
        raise UserError("grid: give at least one weight decay value")
    train_x, train_y = _features(train_x, "train_x"), _labels(train_y, "train_y")
    test_x, test_y = _features(test_x, "test_x"), _labels(test_y, "test_y")
    _same_length(train_x, train_y, "train")
    _same_length(test_x, test_y, "test")
    if train_y.unique().numel() < 2:
        raise UserError(f"train_y: every label is {int(train_y[0])}; a classifier needs at least two classes")
    if (val_x is None) != (val_y is None):
        raise UserError("val_x and val_y: give both or neither")
    if val_x is None:
        fit_idx, val_idx = stratified_split(train_y, val_fraction, seed=seed)
        fit_x, fit_y, val_x, val_y = train_x[fit_idx], train_y[fit_idx], train_x[val_idx], train_y[val_idx]
    else:
        val_x, val_y = _features(val_x, "val_x"), _labels(val_y, "val_y")
        _same_length(val_x, val_y, "val")
        fit_x, fit_y = train_x, train_y
    widths = {t.shape[1] for t in (train_x, val_x, test_x)}
    if len(widths) != 1:
        raise UserError(f"train, val and test features differ in width: {sorted(widths)}")
    largest = int(max(train_y.max(), val_y.max(), test_y.max()))
    k = num_classes or largest + 1
    if largest >= k:
        raise UserError(f"labels go up to {largest} but num_classes={k}")

    val_scores: dict[float, float] = {}
    best_lambda, best_score, best_fit = None, -math.inf, None
    previous, worse = None, 0
    options = dict(num_classes=k, max_iter=max_iter, tolerance_grad=tolerance_grad, dtype=dtype, device=device)
    strengths = sorted((float(v) for v in grid), reverse=True)
    label = progress if isinstance(progress, str) else "linear probe"
    with progress_bar(enabled=bool(progress)) as bar:
        task = bar.add_task(f"{label}: L2 path, then the refit", total=len(strengths) + 1)
        # strongest first, each fit warm-started from the previous one: the path is cheap to follow
        for lam in strengths:
            fit = fit_logistic_regression(fit_x, fit_y, weight_decay=lam, init=previous, **options)
            predictions = fit.logits(val_x.to(device)).argmax(dim=1).cpu()
            score = (100.0 * (predictions == val_y).double().mean().item() if select_metric == "top1"
                     else mean_per_class_accuracy(predictions, val_y))
            val_scores[lam] = score
            if score > best_score:
                best_lambda, best_score, best_fit, worse = lam, score, fit, 0
            elif score < best_score:
                worse += 1
                if patience is not None and worse >= patience:
                    break
            previous = fit
            bar.advance(task)
        bar.update(task, total=len(val_scores) + 1, completed=len(val_scores))

        final = fit_logistic_regression(torch.cat([fit_x, val_x]), torch.cat([fit_y, val_y]), weight_decay=best_lambda,
                                        init=best_fit, **options)
        bar.advance(task)
    scores = classification_scores(final.logits(test_x.to(device)).cpu(), test_y)
    return LinearProbeResult(
        **scores.to_dict(),
        weight_decay=best_lambda,
        val_scores=dict(sorted(val_scores.items())),
        select_metric=select_metric,
        train_size=len(fit_x),
        val_size=len(val_x),
        test_size=len(test_x),
        num_classes=k,
    )


def fit_logistic_regression(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    weight_decay: float,
    init: LogisticRegressionFit | None = None,
    max_iter: int = 1000,
    tolerance_grad: float = 1e-6,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> LogisticRegressionFit:
    """Minimise ``mean CE + weight_decay / 2 * ||W||^2`` on features standardised with their own statistics.

    Full batch, L-BFGS with a strong-Wolfe line search; `init` warm-starts from an earlier fit.
    Only the classes present in `y` are fitted (as scikit-learn does); the others get a bias of
    -inf, so they are never predicted, instead of a bias that L-BFGS would chase to -inf.
    """
    x = torch.as_tensor(x).to(device=device, dtype=dtype)
    y = torch.as_tensor(y).to(device=device, dtype=torch.long)
    present, y = torch.unique(y, return_inverse=True)
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))  # constant features stay at zero
    z = (x - mean) / std
    # the weight is held as (K, D), so both products below run on contiguous memory (several times
    # faster on CPU than the transposed (D, K) product)
    if init is not None:
        weight = init.weight.detach().to(device=device, dtype=dtype)[:, present].T.contiguous()
        bias = init.bias.detach().to(device=device, dtype=dtype)[present].clone()
        unfitted = torch.isinf(bias)  # a class the earlier fit did not see
        weight[unfitted], bias[unfitted] = 0.0, 0.0
    else:
        weight = torch.zeros(len(present), x.shape[1], device=device, dtype=dtype)
        bias = torch.zeros(len(present), device=device, dtype=dtype)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=tolerance_grad, tolerance_change=1e-9,
                                  line_search_fn="strong_wolfe")
    rows = torch.arange(len(y), device=device)

    def closure() -> torch.Tensor:
        # loss and gradient by hand: one product forward, one back, no autograd graph
        logits = torch.addmm(bias, z, weight.T)
        log_norm = torch.logsumexp(logits, dim=1, keepdim=True)
        loss = (log_norm.squeeze(1) - logits[rows, y]).mean() + 0.5 * weight_decay * weight.pow(2).sum()
        residual = logits.sub_(log_norm).exp_()  # softmax probabilities, in place
        residual[rows, y] -= 1.0
        residual.div_(len(y))
        weight.grad = torch.addmm(weight, residual.T, z, beta=weight_decay)
        bias.grad = residual.sum(dim=0)
        return loss

    optimizer.step(closure)
    iterations = int(optimizer.state[optimizer._params[0]].get("n_iter", 0))
    full_weight = torch.zeros(x.shape[1], num_classes, device=device, dtype=dtype)
    full_bias = torch.full((num_classes,), -math.inf, device=device, dtype=dtype)
    full_weight[:, present], full_bias[present] = weight.T, bias
    return LogisticRegressionFit(weight=full_weight, bias=full_bias, mean=mean, std=std, iterations=iterations)


def stratified_split(labels: ArrayLike, fraction: float, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (fit, held_out): about `fraction` of each class held out, at least one of each class with 2+ samples."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"val_fraction must be in (0, 1), got {fraction}")
    labels = _labels(labels, "labels")
    generator = torch.Generator().manual_seed(seed)
    fit, held_out = [], []
    for c in labels.unique():
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_out = min(max(1, round(fraction * len(members))), len(members) - 1)
        held_out.append(members[:n_out])
        fit.append(members[n_out:])
    fit_idx, held_idx = torch.cat(fit).sort().values, torch.cat(held_out).sort().values
    if len(held_idx) == 0:
        raise UserError("cannot hold out a validation split: every class has a single training sample")
    return fit_idx, held_idx


def _features(x: ArrayLike, name: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu()
    if x.ndim != 2 or x.shape[0] == 0:
        raise UserError(f"{name}: expected a non-empty (N, D) feature matrix, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise UserError(f"{name}: features contain NaN or infinity")
    return x.float() if not x.is_floating_point() else x


def _labels(y: ArrayLike, name: str) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).detach().cpu()
    if y.ndim != 1 or y.numel() == 0:
        raise UserError(f"{name}: expected a non-empty (N,) label vector, got shape {tuple(y.shape)}")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise UserError(f"{name}: labels must be integers")
    y = y.long()
    if int(y.min()) < 0:
        raise UserError(f"{name}: labels must be >= 0, found {int(y.min())}")
    return y


def _same_length(x: torch.Tensor, y: torch.Tensor, split: str) -> None:
    if len(x) != len(y):
        raise UserError(f"{split}: {len(x)} feature rows but {len(y)} labels")
