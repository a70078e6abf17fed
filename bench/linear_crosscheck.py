"""Cross-check: our L-BFGS linear probe against scikit-learn's, on the same extracted features.

    equimod-zoo extract --dataset ../shared/data/cifar10-jpeg --split train --model RUN --out feats/train
    equimod-zoo extract --dataset ../shared/data/cifar10-jpeg --split test  --model RUN --out feats/test
    python bench/linear_crosscheck.py --train feats/train --test feats/test

The reference is a standard scikit-learn multinomial LogisticRegression (lbfgs) on standardised
features, its C picked on a stratified 20 % held out from train, then refit on all of train.
Ours is `equimod_zoo.linear_probe` with its defaults. Both run side by side; the table gives
each top-1, the gap, and each wall time. A card's linear top-1 is trusted when the gap is within
1.5 points.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import equimod_zoo
from equimod_zoo.extraction.store import read_metadata

C_GRID = np.logspace(-4, 2, 7)


def _labelled(folder: str) -> tuple[np.ndarray, np.ndarray]:
    _, features = equimod_zoo.load_features(folder)
    return features, read_metadata(folder).column("label").to_numpy()


def sklearn_probe(train_x, train_y, test_x, test_y, *, seed: int = 0) -> tuple[float, float]:
    fit_x, val_x, fit_y, val_y = train_test_split(train_x, train_y, test_size=0.2, stratify=train_y,
                                                  random_state=seed)
    scaler = StandardScaler().fit(fit_x)
    scores = {}
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(fit_x), fit_y)
        scores[c] = model.score(scaler.transform(val_x), val_y)
    best = max(scores, key=scores.get)
    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(C=best, max_iter=1000).fit(scaler.transform(train_x), train_y)
    return 100.0 * model.score(scaler.transform(test_x), test_y), float(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    args = parser.parse_args()
    train_x, train_y = _labelled(args.train)
    test_x, test_y = _labelled(args.test)

    start = time.perf_counter()
    ours = equimod_zoo.linear_probe(train_x, train_y, test_x, test_y)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    reference, best_c = sklearn_probe(train_x, train_y, test_x, test_y)
    reference_s = time.perf_counter() - start

    table = Table(title=f"linear probe, {len(train_y)} train / {len(test_y)} test features")
    for column in ("probe", "top-1 %", "regularisation", "seconds"):
        table.add_column(column)
    table.add_row("equimod_zoo.linear_probe", f"{ours.top1:.2f}", f"weight decay {ours.weight_decay:g}", f"{ours_s:.1f}")
    table.add_row("scikit-learn LogisticRegression", f"{reference:.2f}", f"C {best_c:g}", f"{reference_s:.1f}")
    console = Console()
    console.print(table)
    console.print(f"gap {ours.top1 - reference:+.2f} points; time ratio (sklearn / ours) {reference_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
