"""The frozen-feature probes: metrics by hand, the linear probe against known rules and scikit-learn, the kNN."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from equimod_zoo.probes.knn import knn_probe
from equimod_zoo.probes.linear import fit_logistic_regression, linear_probe, stratified_split
from equimod_zoo.probes.metrics import classification_scores, mean_per_class_accuracy, topk_accuracy



def blobs(n: int, *, d: int = 16, k: int = 4, spread: float = 0.3, seed: int = 0):
    """Gaussian blobs around k random unit-scale centres; returns (x, y) numpy arrays."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(k, d)) * 3.0
    y = rng.integers(0, k, n)
    return (centres[y] + spread * rng.normal(size=(n, d))).astype(np.float32), y


def correlated_rule(n: int, *, seed: int, d: int = 10, k: int = 3):
    """Labels from a linear rule on strongly correlated features: it needs a precise boundary (small lambda)."""
    rng = np.random.default_rng(seed)
    root = rng.normal(size=(d, d)) * np.logspace(0, -2, d)
    rule = np.linalg.pinv(root).T @ rng.normal(size=(d, k))

    def draw(m):
        x = rng.normal(size=(m, d)) @ root.T
        return x, np.argmax(x @ rule, axis=1)

    return draw(n), draw(500)


def noisy_blobs(n: int, *, seed: int, d: int = 200, k: int = 3):
    """Few samples, weak signal, many dimensions: over-fitting territory (large lambda)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 0.15

    def draw(m):
        y = rng.integers(0, k, m)
        return centres[y] + rng.normal(size=(m, d)), y

    return draw(n), draw(500)


# --- metrics -------------------------------------------------------------------------------------

def test_topk_accuracy_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1]])
    targets = torch.tensor([0, 1, 2, 2])
    # row 0 right; row 1 predicts 2 (target 1 second); row 2 predicts 1 (target 2 second); row 3 target last
    assert topk_accuracy(scores, targets, 1) == pytest.approx(25.0)
    assert topk_accuracy(scores, targets, 2) == pytest.approx(75.0)
    assert topk_accuracy(scores, targets, 5) == pytest.approx(100.0)  # k capped at 3 classes


def test_mean_per_class_accuracy_weighs_classes_not_samples():
    # class 0: 8 samples, all right; class 1: 2 samples, 1 right -> top-1 90 %, per-class mean 75 %
    targets = torch.tensor([0] * 8 + [1] * 2)
    predictions = torch.tensor([0] * 8 + [1, 0])
    assert mean_per_class_accuracy(predictions, targets) == pytest.approx(75.0)
    scores = torch.nn.functional.one_hot(predictions, 2).float()
    result = classification_scores(scores, targets)
    assert result.top1 == pytest.approx(90.0)
    assert result.mean_per_class_accuracy == pytest.approx(75.0)
    assert result.top5 == pytest.approx(100.0)


def test_mean_per_class_ignores_classes_absent_from_targets():
    targets = torch.tensor([2, 2, 5])
    predictions = torch.tensor([2, 0, 1])
    assert mean_per_class_accuracy(predictions, targets) == pytest.approx((50.0 + 0.0) / 2)


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="scores must be"):
        topk_accuracy(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="same length"):
        mean_per_class_accuracy(torch.zeros(3), torch.zeros(2))


# --- linear probe --------------------------------------------------------------------------------

def test_linear_probe_recovers_separable_blobs():
    train_x, train_y = blobs(400, seed=0)
    test_x, test_y = blobs(400, seed=1)
    result = linear_probe(train_x, train_y, test_x, test_y, device="cpu")
    assert result.top1 >= 99.0
    assert result.mean_per_class_accuracy >= 99.0
    assert result.top5 == pytest.approx(100.0)
    assert (result.train_size, result.val_size, result.test_size) == (320, 80, 400)
    assert result.weight_decay in result.val_scores and len(result.val_scores) == 13


def test_linear_probe_is_near_chance_on_random_labels():
    rng = np.random.default_rng(0)
    train_x, test_x = rng.normal(size=(400, 32)), rng.normal(size=(1000, 32))
    train_y, test_y = rng.integers(0, 4, 400), rng.integers(0, 4, 1000)
    result = linear_probe(train_x, train_y, test_x, test_y, device="cpu")
    assert 17.0 <= result.top1 <= 33.0  # chance is 25 %


def test_regularisation_choice_moves_with_the_data():
    (x, y), (xt, yt) = correlated_rule(600, seed=1)
    clean = linear_probe(x, y, xt, yt, device="cpu")
    (x, y), (xt, yt) = noisy_blobs(300, seed=1)
    noisy = linear_probe(x, y, xt, yt, device="cpu")
    assert clean.weight_decay <= 1e-4 and clean.top1 >= 85.0
    assert noisy.weight_decay >= 1000 * clean.weight_decay
    # on the noisy data the chosen lambda beats the weakest one on validation
    assert noisy.val_scores[noisy.weight_decay] > noisy.val_scores[min(noisy.val_scores)]


def test_sweep_stops_once_validation_falls_and_keeps_the_choice():
    (x, y), (xt, yt) = noisy_blobs(300, seed=1)
    full = linear_probe(x, y, xt, yt, patience=None, device="cpu")
    early = linear_probe(x, y, xt, yt, device="cpu")  # patience=2
    assert len(full.val_scores) == 13 and len(early.val_scores) < 13
    assert early.weight_decay == full.weight_decay and early.top1 == pytest.approx(full.top1, abs=0.5)
    tried = sorted(early.val_scores, reverse=True)
    assert all(early.val_scores[lam] < early.val_scores[early.weight_decay] for lam in tried[-2:])
    assert all(early.val_scores[lam] == pytest.approx(full.val_scores[lam], abs=1.0) for lam in tried)


def test_fit_matches_scikit_learn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    (x, y), (xt, yt) = noisy_blobs(300, seed=2, d=40)
    weight_decay = 1e-2
    ours = fit_logistic_regression(torch.tensor(x), torch.tensor(y), num_classes=3, weight_decay=weight_decay)
    z = (x - x.mean(0)) / x.std(0)
    theirs = sklearn.LogisticRegression(C=1.0 / (weight_decay * len(x)), tol=1e-10, max_iter=10_000).fit(z, y)
    np.testing.assert_allclose(ours.weight.T.numpy(), theirs.coef_, atol=2e-4)
    probabilities = torch.softmax(ours.logits(torch.tensor(xt)), dim=1).numpy()
    zt = (xt - x.mean(0)) / x.std(0)
    np.testing.assert_allclose(probabilities, theirs.predict_proba(zt), atol=1e-4)


def test_linear_probe_agrees_with_scikit_learn_accuracy():
    sklearn = pytest.importorskip("sklearn.linear_model")
    (x, y), (xt, yt) = noisy_blobs(300, seed=3, d=60)
    result = linear_probe(x[:240], y[:240], xt, yt, val_x=x[240:], val_y=y[240:], device="cpu")
    mean, std = x.mean(0), x.std(0)
    theirs = sklearn.LogisticRegression(C=1.0 / (result.weight_decay * len(x)), max_iter=10_000)
    theirs.fit((x - mean) / std, y)
    sklearn_top1 = 100.0 * (theirs.predict((xt - mean) / std) == yt).mean()
    assert abs(result.top1 - sklearn_top1) <= 1.0
    assert (result.train_size, result.val_size) == (240, 60)


def test_stratified_split_holds_out_every_class_and_is_seeded():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 2)
    fit, held = stratified_split(labels, 0.2, seed=0)
    assert sorted(labels[held].tolist()) == [0, 0, 1, 2]
    assert set(fit.tolist()).isdisjoint(held.tolist()) and len(fit) + len(held) == len(labels)
    assert torch.equal(held, stratified_split(labels, 0.2, seed=0)[1])
    assert not torch.equal(held, stratified_split(labels, 0.2, seed=1)[1])


def test_linear_probe_rejects_bad_input():
    x, y = blobs(40)
    with pytest.raises(ValueError, match="train: 40 feature rows but 39 labels"):
        linear_probe(x, y[:-1], x, y)
    with pytest.raises(ValueError, match="width"):
        linear_probe(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="labels must be >= 0"):
        linear_probe(x, y - 1, x, y)
    with pytest.raises(ValueError, match="NaN"):
        linear_probe(np.full_like(x, np.nan), y, x, y)


def test_linear_probe_selects_by_mean_per_class_when_asked():
    train_x, train_y = blobs(200, seed=4)
    test_x, test_y = blobs(100, seed=5)
    result = linear_probe(train_x, train_y, test_x, test_y, select_metric="mean_per_class_accuracy",
                          grid=(1e-3, 1e-1), device="cpu")
    assert result.select_metric == "mean_per_class_accuracy" and set(result.val_scores) == {1e-3, 1e-1}


def test_top_level_exports():
    import equimod_zoo

    assert equimod_zoo.linear_probe is linear_probe
    assert equimod_zoo.knn_probe is knn_probe


# --- kNN -----------------------------------------------------------------------------------------

def test_knn_separates_blobs():
    train_x, train_y = blobs(300, seed=0)
    test_x, test_y = blobs(200, seed=1)
    result = knn_probe(train_x, train_y, test_x, test_y, k=20, batch_size=64, device="cpu")
    assert result.top1 >= 99.0 and result.k == 20
    assert (result.train_size, result.test_size, result.num_classes) == (300, 200, 4)


def test_knn_weights_votes_by_similarity():
    # Two training points of class 0 far from the query, one of class 1 right on it: with a small
    # temperature the near neighbour wins although it is outvoted 2 to 1.
    train_x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    train_y = torch.tensor([0, 0, 1])
    query = torch.tensor([[0.1, 1.0]])
    near = knn_probe(train_x, train_y, query, torch.tensor([1]), k=3, temperature=0.05, device="cpu")
    assert near.top1 == 100.0
    flat = knn_probe(train_x, train_y, query, torch.tensor([1]), k=3, temperature=100.0, device="cpu")
    assert flat.top1 == 0.0  # almost equal weights: the majority (class 0) wins


def test_knn_chunking_does_not_change_the_answer():
    train_x, train_y = blobs(200, spread=3.0, seed=0)
    test_x, test_y = blobs(150, spread=3.0, seed=1)
    whole = knn_probe(train_x, train_y, test_x, test_y, k=200, batch_size=1000, device="cpu")
    chunks = knn_probe(train_x, train_y, test_x, test_y, k=200, batch_size=7, device="cpu")
    assert whole == chunks and whole.k == 200
    assert 30.0 < whole.top1 < 100.0  # overlapping blobs: a real, imperfect score


# --- `equimod-zoo linear` on extracted features -------------------------------------------------

COLOURS = ((220, 40, 40), (40, 200, 60), (40, 60, 220))


def write_colour_images(root, *, per_class: int, seed: int) -> None:
    """An imagefolder tree of 12x12 images whose class is their (noisy) colour."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, colour in enumerate(COLOURS):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, size=(12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")


@pytest.fixture
def extracted(tmp_path, tiny_resnet18_cifar):
    """A tiny model folder and the features of a train and a test colour tree."""
    from equimod_zoo.extraction.extract import extract_features
    from equimod_zoo.data.sources import imagefolder_source
    from equimod_zoo.model_folder import write_model_folder

    model = tmp_path / "model"
    write_model_folder(model, tiny_resnet18_cifar, arch="resnet18_cifar",
                       model_args={"channels": (8, 16, 32, 64), "stem_width": 8})
    for split, seed in (("train", 0), ("test", 1)):
        write_colour_images(tmp_path / "images" / split, per_class=8, seed=seed)
        extract_features(imagefolder_source(tmp_path / "images" / split), out=tmp_path / split, model=model,
                         resolution=16, num_workers=0, device="cpu", precision="fp32", progress=False)
    return tmp_path


def test_linear_command_reports_writes_json_and_records(extracted, monkeypatch):
    import json
    import sys

    from typer.testing import CliRunner

    from equimod_zoo.cli import app
    from equimod_zoo.records import read_records

    out = extracted / "probe.json"
    args = ["linear", "--train", str(extracted / "train"), "--test", str(extracted / "test"), "--json", str(out),
            "--record", str(extracted / "records"), "--dataset-name", "colours", "--k", "5"]
    monkeypatch.setattr(sys, "argv", ["equimod-zoo", *args])  # the command a record names is the one typed
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "linear" in result.output and "kNN" in result.output
    report = json.loads(out.read_text())
    assert report["linear"]["test_size"] == 24 and report["linear"]["train_size"] + report["linear"]["val_size"] == 24
    assert report["linear"]["top1"] >= 90.0 and report["knn"]["top1"] >= 90.0  # colour is easy, even untrained
    recorded = {(m.metric, m.protocol): m for m in read_records(extracted / "records", report["weights_sha256"])}
    assert recorded[("top1", "linear")].value == pytest.approx(report["linear"]["top1"], abs=1e-3)
    assert recorded[("knn_top1", "knn")].dataset == "colours"
    assert recorded[("top1", "linear")].weights_sha256 == report["weights_sha256"]
    assert recorded[("top1", "linear")].command.startswith("equimod-zoo linear --train ")
    assert "--record" not in recorded[("top1", "linear")].command
    # evaluation never writes into a weights folder
    into_model = CliRunner().invoke(app, [
        "linear", "--train", str(extracted / "train"), "--test", str(extracted / "test"),
        "--record", str(extracted / "model"), "--dataset-name", "colours"])
    assert into_model.exit_code == 2 and "a model folder" in into_model.output
    assert "results" not in json.loads((extracted / "model" / "config.json").read_text())["equimod"]


def test_linear_command_errors_are_one_line(extracted, tmp_path):
    from typer.testing import CliRunner

    from equimod_zoo.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["linear", "--train", str(tmp_path / "nowhere"), "--test", str(extracted / "test")])
    assert missing.exit_code == 2 and "nowhere" in missing.output and "Traceback" not in missing.output
    no_name = runner.invoke(app, ["linear", "--train", str(extracted / "train"), "--test", str(extracted / "test"),
                                  "--record", str(extracted / "model")])
    assert no_name.exit_code == 2 and "--dataset-name" in no_name.output


def test_a_one_class_training_set_is_refused(extracted, tmp_path, tiny_resnet18_cifar):
    from typer.testing import CliRunner

    from equimod_zoo.cli import app
    from equimod_zoo.extraction.extract import extract_features
    from equimod_zoo.data.sources import imagefolder_source

    x, _ = blobs(20)
    with pytest.raises(ValueError, match="at least two classes"):
        linear_probe(x, np.full(20, 3), x, np.full(20, 3))
    single = tmp_path / "one_class"
    (single / "red").mkdir(parents=True)
    for i, path in enumerate(sorted((extracted / "images" / "train" / "class0").iterdir())):
        (single / "red" / path.name).write_bytes(path.read_bytes())
    extract_features(imagefolder_source(single), out=tmp_path / "one_class_features", model=extracted / "model",
                     resolution=16, num_workers=0, device="cpu", precision="fp32", progress=False)
    result = CliRunner().invoke(app, ["linear", "--train", str(tmp_path / "one_class_features"),
                                      "--test", str(extracted / "test")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "one_class_features" in result.output and "at least two classes" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_frozen_probe_of_the_commands_computes_in_float64(monkeypatch):
    # float32 sums in an order that depends on the thread count: near-tied L2 strengths then swap
    # places and a score moves between machines; the commands' probe computes in float64.
    from equimod_zoo.probes import frozen

    seen = []
    monkeypatch.setattr(frozen, "linear_probe", lambda *a, **k: seen.append(k["dtype"]) or linear_probe(*a, **k))
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    part = frozen.LabelledFeatures(rng.normal(size=(60, 8)).astype(np.float32) + labels[:, None], labels, "x")
    report = frozen.frozen_probe(part, part, protocols=("linear",), device="cpu")
    assert seen == [torch.float64] and report.linear.top1 > 90
