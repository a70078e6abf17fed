import json

import pytest
from typer.testing import CliRunner

from equimod_zoo.cli import app
from equimod_zoo.registry import Catalogue, ZooEntry, get_entry, list_models
from equimod_zoo.errors import UnknownModelError


def _entry(name, method="simclr", arch="resnet18_cifar", status="recipe-only", n=50000, epochs=800, **kw):
    return ZooEntry(name=name, arch=arch, tag=name, method=method, data="cifar10", num_train_images=n,
                    epochs=epochs, recipe=name, license="apache-2.0", status=status, **kw)


def test_short_alias_prefers_available_then_larger_data():
    cat = Catalogue((
        _entry("a_in1k", method="byol_equimod", arch="resnet50", n=1_281_167),
        _entry("a_cifar", method="byol_equimod", arch="resnet50_cifar"),
    ))
    assert cat.get("byol_equimod_r50").name == "a_in1k"
    trained = _entry("b_cifar", method="byol_equimod", arch="resnet50_cifar", status="available")
    cat = Catalogue((_entry("a_in1k", method="byol_equimod", arch="resnet50", n=1_281_167), trained))
    assert cat.get("byol_equimod_r50") is trained
    assert cat.nearest_available(cat.get("a_in1k")) is trained


def test_names_aliases_and_arch_tags_resolve():
    entry = _entry("simclr_equimod_r18_cifar10", method="simclr_equimod", aliases=("seq18",))
    cat = Catalogue((entry,))
    for key in ("simclr_equimod_r18_cifar10", "seq18", "resnet18_cifar.simclr_equimod_r18_cifar10",
                "simclr_equimod_r18"):
        assert cat.get(key) is entry
    with pytest.raises(UnknownModelError, match="unknown model 'nope'"):
        cat.get("nope")


def test_duplicate_alias_is_rejected():
    with pytest.raises(ValueError, match="names both"):
        Catalogue((_entry("x", aliases=("same",)), _entry("y", aliases=("same",))))


def test_shipped_catalogue_covers_the_papers_eight_settings():
    names = {e.name for e in list_models()}
    for method in ("simclr", "simclr_equimod", "byol", "byol_equimod"):
        assert f"{method}_r18_cifar10" in names and f"{method}_r50_in1k" in names
        for depth in ("r18", "r50"):
            assert get_entry(f"{method}_{depth}").method.name == method


def test_entry_round_trips_through_json():
    entry = _entry("x", status="available", sha256="ab" * 32)
    assert ZooEntry.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry
    row = {**entry.to_dict(), "epochs": "800"}  # a hand-edited catalogue: a clear line naming entry and key
    with pytest.raises(ValueError, match=r"catalogue\.json: x\.epochs must be an integer, got '800'"):
        ZooEntry.from_dict(row)
    with pytest.raises(ValueError, match=r"unknown key x\.colour"):
        ZooEntry.from_dict({**entry.to_dict(), "colour": "red"})


def test_cli_list_json_has_the_fixed_fields():
    result = CliRunner().invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows and {"name", "aliases", "arch", "status", "metrics"} <= set(rows[0])
    assert all(r["status"] in ("available", "recipe-only") for r in rows)
    byol50 = next(r for r in rows if r["name"] == get_entry("byol_equimod_r50").name)
    assert "byol_equimod_r50" in byol50["aliases"]


def test_list_models_and_info_show_the_same_aliases():
    for entry in list_models():
        info = json.loads(CliRunner().invoke(app, ["info", entry.name]).output)
        assert info["aliases"] == list(entry.aliases) and f"aliases={entry.aliases!r}" in repr(entry)
        assert {entry.name, *entry.aliases, info["arch_tag"]} <= {n for n in (entry.name, *entry.aliases,
                                                                                info["arch_tag"])
                                                                   if get_entry(n) == entry}
    assert "simclr_equimod_r18" in get_entry("simclr_equimod_r18_cifar10").aliases  # the short alias it is best for


def test_list_models_takes_a_name_pattern_and_pretrained_as_timm_does():
    r18 = list_models("*r18*")
    assert r18 and all("r18" in e.name for e in r18)
    trained = list_models(pretrained=True)
    assert trained and all(e.status == "available" for e in trained)
    assert len(trained) < len(list_models())
    assert [e.name for e in list_models(["*byol*", "*simclr*"], pretrained=True)] == [
        e.name for e in trained if "byol" in e.name or "simclr" in e.name]
    assert list_models("no_such_*") == []
    assert list_models(status="recipe-only") == [e for e in list_models() if e.status == "recipe-only"]


def test_catalogue_metrics_come_from_the_records_only(tmp_path):
    from equimod_zoo.records import Record, add_records

    sha = "ab" * 32
    row = _entry("x", status="available", sha256=sha).to_dict()
    (tmp_path / "catalogue.json").write_text(json.dumps([{**row, "metrics": []}]))
    with pytest.raises(ValueError, match="writes metrics by hand"):
        Catalogue.from_file(tmp_path / "catalogue.json")
    (tmp_path / "catalogue.json").write_text(json.dumps([row]))
    assert Catalogue.from_file(tmp_path / "catalogue.json").get("x").metrics == ()
    add_records(tmp_path / "records", [Record(sha, "cifar10", "test", "linear", "top1", 12.5, "equimod-zoo linear",
                                              "2026-12-01", "0.1.0")])
    (metric,) = Catalogue.from_file(tmp_path / "catalogue.json").get("x").metrics
    assert (metric.metric, metric.value, metric.weights_sha256) == ("top1", 12.5, sha)


def test_cli_list_fits_80_columns_and_says_planned_epochs():
    result = CliRunner().invoke(app, ["list"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, result.output
    assert "…" not in result.output  # nothing truncated
    for entry in list_models():
        row = next(line for line in lines if line.startswith(entry.name + " "))
        assert ("planned" in row) == (entry.status == "recipe-only"), row
        assert entry.status in row
    trained = next(e for e in list_models(pretrained=True))
    assert f"{trained.metrics[0].value:.2f}" in result.output
    only = CliRunner().invoke(app, ["list", "*byol*", "--available"], env={"COLUMNS": "80"})
    names = {e.name for e in list_models("*byol*", pretrained=True)}
    assert names and all(name in only.output for name in names)
    assert not any(e.name in only.output for e in list_models() if e.name not in names)


def test_cli_info_unknown_name_is_one_clear_line():
    result = CliRunner().invoke(app, ["info", "no_such_model"])
    assert result.exit_code == 2
    assert "unknown model 'no_such_model'" in result.output
    assert "Traceback" not in result.output
