"""Held-out linear probes of the augmentation parameters from frozen features.

For each parameter of the pipeline (its `AugmentConfig.params`, at most the 18 of `PARAM_NAMES`)
a linear read-out is fitted on features of
augmented views, its regularisation chosen on a validation split, refitted on train + val and
scored on a held-out test split:

- continuous parameters (crop box, jitter order entries and factors, blur sigma): ridge
  regression in closed form (one SVD of the features serves every target and every
  regularisation strength) -> R^2 (1 is perfect, 0 is predicting the mean, below 0 is worse);
- binary parameters (flip, jitter applied, grayscale, blur applied, solarize): logistic
  regression (`equimod_zoo.probes.linear.fit_logistic_regression`), with the decision shifted to
  balance the classes -> balanced accuracy (0.5 is chance).

Splits are by image (the views of one image never straddle two splits), and the 95 % interval
is a percentile bootstrap over the test images.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from equimod_zoo.probes.linear import fit_logistic_regression
from equimod_zoo.equimod.augment import BINARY_PARAMS, PARAM_NAMES
from equimod_zoo.errors import UnknownNameError, UserError

R2 = "r2"
BALANCED_ACCURACY = "balanced_accuracy"
RIDGE_ALPHAS = tuple(10.0 ** e for e in range(-4, 4))  # times the number of training samples
LOGISTIC_WEIGHT_DECAYS = tuple(10.0 ** e for e in range(-5, 1))


@dataclass(frozen=True)
class ProbeScore:
    """A held-out score and its 95 % bootstrap interval (None where the target is constant)."""

    metric: str  # "r2" or "balanced_accuracy"
    value: float | None
    ci_low: float | None
    ci_high: float | None

    def to_dict(self) -> dict[str, float | str | None]:
        return asdict(self)


@dataclass(frozen=True)
class ImageSplits:
    """Indices of the images in each split."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor


def metric_of(name: str) -> str:
    """The metric a parameter is scored with."""
    if name not in PARAM_NAMES:
        raise UnknownNameError(f"unknown augmentation parameter {name!r}; expected one of {', '.join(PARAM_NAMES)}")
    return BALANCED_ACCURACY if name in BINARY_PARAMS else R2


def split_images(num_images: int, *, seed: int = 0, fractions: tuple[float, float] = (0.2, 0.2)) -> ImageSplits:
    """A random split of the images: `fractions` = (val, test), the rest trains."""
    val_fraction, test_fraction = fractions
    num_val, num_test = round(num_images * val_fraction), round(num_images * test_fraction)
    if min(num_val, num_test, num_images - num_val - num_test) < 2:
        raise UserError(f"num_images: {num_images} images are too few to split into train, val and test probes")
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    return ImageSplits(train=order[num_val + num_test:].sort().values, val=order[:num_val].sort().values,
                       test=order[num_val:num_val + num_test].sort().values)


def probe_parameters(features: torch.Tensor, params: torch.Tensor, image: torch.Tensor, splits: ImageSplits, *,
                     names: Sequence[str] = PARAM_NAMES, num_bootstrap: int = 1000, seed: int = 0,
                     device: torch.device | str = "cpu",
                     advance: Callable[[int], None] | None = None) -> dict[str, ProbeScore]:
    """Score how linearly decodable each parameter is from `features`.

    Args:
        features: [M, D] features of M augmented samples.
        params: [M, len(names)] their raw parameter vectors.
        image: [M] the image each sample comes from (indexes the splits).
        splits: which images train, select the regularisation, and test.
        names: what each column of `params` is (the pipeline's `AugmentConfig.params`).
        advance: called with the number of parameters scored, as they are (a progress bar's step).
    Returns {parameter name: ProbeScore} for every name, in `names` order.
    """
    names = tuple(names)
    for name in names:
        metric_of(name)  # a known parameter
    if features.ndim != 2 or params.shape != (features.shape[0], len(names)) or image.shape != features.shape[:1]:
        raise UserError(f"features [M, D], params [M, {len(names)}] and image [M] must agree, got "
                        f"{list(features.shape)}, {list(params.shape)}, {list(image.shape)}")
    x = features.to(device=device, dtype=torch.float64)
    params = params.to(device=device, dtype=torch.float64)
    image = image.to(device)
    rows = {role: torch.isin(image, getattr(splits, role).to(device)).nonzero().squeeze(1) for role in ("train", "val", "test")}
    resample = _bootstrap_weights(image[rows["test"]], num_bootstrap, seed=seed)

    scores: dict[str, ProbeScore] = {}
    continuous = [i for i, name in enumerate(names) if metric_of(name) == R2]
    advance = advance or (lambda count: None)
    for index, score in zip(continuous, _ridge_scores(x, params[:, continuous], rows, resample)):
        scores[names[index]] = score
    advance(len(continuous))
    for index, name in enumerate(names):
        if metric_of(name) == BALANCED_ACCURACY:
            scores[name] = _logistic_score(x, params[:, index].round().long(), rows, resample)
            advance(1)
    return {name: scores[name] for name in names}


# ---- ridge ---------------------------------------------------------------------------------------
def _ridge_scores(x: torch.Tensor, y: torch.Tensor, rows: dict[str, torch.Tensor],
                  resample: torch.Tensor) -> list[ProbeScore]:
    """Ridge per target column of y: alpha chosen on val R^2, refitted on train + val, R^2 on test."""
    train, val, test = rows["train"], rows["val"], rows["test"]
    lambdas = [alpha * len(train) for alpha in RIDGE_ALPHAS]
    val_pred = _ridge_predictions(x[train], y[train], x[val], lambdas)  # [L, n_val, T]
    val_r2 = torch.stack([_r2(y[val], p) for p in val_pred])  # [L, T]
    best = val_r2.nan_to_num(-math.inf).argmax(dim=0)
    fit = torch.cat([train, val])
    chosen = [lambdas[i] for i in best.tolist()]
    test_pred = _ridge_predictions(x[fit], y[fit], x[test], sorted(set(chosen)))
    by_lambda = {lam: i for i, lam in enumerate(sorted(set(chosen)))}
    scores = []
    for t, lam in enumerate(chosen):
        prediction = test_pred[by_lambda[lam], :, t]
        target = y[test, t]
        if target.var() == 0 or y[fit, t].var() == 0:
            scores.append(ProbeScore(R2, None, None, None))
            continue
        value = _r2(target[:, None], prediction[:, None])[0].item()
        boot = _weighted_r2(target, prediction, resample)
        scores.append(ProbeScore(R2, value, *_interval(boot)))
    return scores


def _ridge_predictions(x_fit: torch.Tensor, y_fit: torch.Tensor, x_eval: torch.Tensor,
                       lambdas: list[float]) -> torch.Tensor:
    """[len(lambdas), n_eval, T] ridge predictions, features standardised on the fit rows."""
    mean, std = x_fit.mean(0), x_fit.std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    z_fit, z_eval = (x_fit - mean) / std, (x_eval - mean) / std
    y_mean = y_fit.mean(0)
    u, s, vh = torch.linalg.svd(z_fit, full_matrices=False)
    projected = u.T @ (y_fit - y_mean)  # [k, T]
    predictions = []
    for lam in lambdas:
        coef = vh.T @ ((s / (s * s + lam))[:, None] * projected)  # [D, T]
        predictions.append(z_eval @ coef + y_mean)
    return torch.stack(predictions)


def _r2(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Column-wise R^2; NaN for a constant column."""
    residual = (target - prediction).pow(2).sum(0)
    total = (target - target.mean(0)).pow(2).sum(0)
    return torch.where(total > 0, 1 - residual / total.clamp_min(1e-300), torch.full_like(total, math.nan))


def _weighted_r2(target: torch.Tensor, prediction: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """R^2 under each row of bootstrap weights [B, n]."""
    mean = (weights * target).sum(1, keepdim=True) / weights.sum(1, keepdim=True)
    residual = (weights * (target - prediction).pow(2)).sum(1)
    total = (weights * (target - mean).pow(2)).sum(1)
    return torch.where(total > 0, 1 - residual / total.clamp_min(1e-300), torch.full_like(total, math.nan))


# ---- logistic ------------------------------------------------------------------------------------
def _logistic_score(x: torch.Tensor, y: torch.Tensor, rows: dict[str, torch.Tensor], resample: torch.Tensor) -> ProbeScore:
    """Logistic regression: weight decay chosen on val balanced accuracy, refitted on train + val."""
    train, val, test = rows["train"], rows["val"], rows["test"]
    fit = torch.cat([train, val])
    if any(len(y[part].unique()) < 2 for part in (train, val, test)):
        return ProbeScore(BALANCED_ACCURACY, None, None, None)
    best, best_score, init = LOGISTIC_WEIGHT_DECAYS[0], -math.inf, None
    for decay in sorted(LOGISTIC_WEIGHT_DECAYS, reverse=True):  # strong to weak, each warm-started
        init = fit_logistic_regression(x[train], y[train], num_classes=2, weight_decay=decay, init=init,
                                       max_iter=200, device=x.device)
        score = _balanced_accuracy(y[val], _balanced_predictions(init, x[val], y[train]))[None]
        if score.item() > best_score:
            best, best_score = decay, score.item()
    model = fit_logistic_regression(x[fit], y[fit], num_classes=2, weight_decay=best, max_iter=200, device=x.device)
    predictions = _balanced_predictions(model, x[test], y[fit])
    value = _balanced_accuracy(y[test], predictions).item()
    boot = _balanced_accuracy(y[test], predictions, resample)
    return ProbeScore(BALANCED_ACCURACY, value, *_interval(boot))


def _balanced_predictions(model, x: torch.Tensor, y_fit: torch.Tensor) -> torch.Tensor:
    """Class predictions with the training prior divided out: the decision that maximises balanced accuracy."""
    prior = torch.bincount(y_fit, minlength=2).to(x.dtype) / len(y_fit)
    return (model.logits(x) - prior.log()).argmax(dim=1)


def _balanced_accuracy(target: torch.Tensor, prediction: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the per-class recalls; one value per row of `weights` [B, n] (or a scalar without)."""
    w = torch.ones(1, len(target), dtype=torch.float64, device=target.device) if weights is None else weights
    correct = (prediction == target).to(w.dtype)
    recalls = []
    for c in (0, 1):
        members = (target == c).to(w.dtype)
        counted = (w * members).sum(1)
        recalls.append(torch.where(counted > 0, (w * members * correct).sum(1) / counted.clamp_min(1e-300),
                                   torch.full_like(counted, math.nan)))
    result = torch.stack(recalls).mean(0)
    return result[0] if weights is None else result


# ---- bootstrap -----------------------------------------------------------------------------------
def _bootstrap_weights(image: torch.Tensor, num_bootstrap: int, *, seed: int) -> torch.Tensor:
    """[B, n] multiplicities of the test samples when their images are resampled with replacement."""
    images, inverse = image.unique(return_inverse=True)
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(len(images), (num_bootstrap, len(images)), generator=generator).to(image.device)
    counts = torch.zeros(num_bootstrap, len(images), dtype=torch.float64, device=image.device)
    counts.scatter_add_(1, draws, torch.ones_like(counts))
    return counts[:, inverse]


def _interval(boot: torch.Tensor) -> tuple[float | None, float | None]:
    boot = boot[~boot.isnan()]
    if boot.numel() == 0:
        return None, None
    low, high = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=boot.dtype, device=boot.device)).tolist()
    return low, high
