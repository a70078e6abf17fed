"""The generated documents (bundled cards, MODEL_CARDS.md, README's results table): generated from the
catalogue and the records, and checked to be up to date."""
import json
from types import SimpleNamespace

import pytest
from test_export_card import make_run_folder, records_dir
from typer.testing import CliRunner

from equimod_zoo.cli import app
from equimod_zoo.paper import paper_table
from equimod_zoo.hub.model_cards import (
    MODEL_CARDS_FILE,
    METHODS_BEGIN,
    METHODS_END,
    README_BEGIN,
    README_END,
    PRETRAINED_TAGS_FILE,
    README_FILE,
    check_model_cards,
    main,
    write_model_cards,
)
from equimod_zoo.errors import OutOfDateError
from equimod_zoo.hub.publish import publish
from equimod_zoo.hub.zoo_bundle import add_to_zoo
from equimod_zoo.registry import BUNDLED_MODELS_DIR, CATALOGUE_FILE


def test_committed_model_cards_is_up_to_date_with_the_registry():
    # Fails when the catalogue, a record or a bundled folder changed without `equimod-zoo model-cards`:
    # the bundled cards, MODEL_CARDS.md, the README's results table and the timm tags are all generated.
    check_model_cards(MODEL_CARDS_FILE, catalogue_path=CATALOGUE_FILE, models_dir=BUNDLED_MODELS_DIR,
                      readme=README_FILE, tags=PRETRAINED_TAGS_FILE)


def test_the_timm_tags_module_is_generated_from_the_catalogue(tmp_path):
    from equimod_zoo.pretrained_tags import ZOO_TAGS
    from equimod_zoo.registry import list_models

    trained = {e.arch_tag: e.name for e in list_models(pretrained=True) if e.arch.endswith("_cifar")}
    assert {tag: row["entry"] for tag, row in ZOO_TAGS.items()} == trained
    stale = tmp_path / "pretrained_tags.py"
    stale.write_text(PRETRAINED_TAGS_FILE.read_text().replace('"apache-2.0"', '"mit"', 1))
    with pytest.raises(OutOfDateError, match="pretrained_tags.py"):
        check_model_cards(MODEL_CARDS_FILE, tags=stale)


def test_a_hand_edited_number_in_the_readme_fails_the_check(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README_FILE.read_text().replace("| 78.58 |", "| 79.58 |"))
    with pytest.raises(OutOfDateError, match="README.md: out of date"):
        check_model_cards(MODEL_CARDS_FILE, readme=readme)
    readme.write_text("# no block\n")
    with pytest.raises(ValueError, match="no results block"):
        check_model_cards(MODEL_CARDS_FILE, readme=readme)
    text = README_FILE.read_text()
    block = text[text.index(README_BEGIN):text.index(README_END)]
    assert "| `simclr_equimod_r18_cifar10` | CIFAR-10 | 41 (5.11 s) | 78.68 | 73.32 | 60.12 | 92.79 *paper*" in block


def test_the_methods_and_backbones_table_is_generated_and_checked(tmp_path):
    text = README_FILE.read_text()
    block = text[text.index(METHODS_BEGIN):text.index(METHODS_END)]
    # every base method of the registry, with its heads, on the backbones its recipes train
    for row in ("| SimCLR | Chen et al., ICML 2020", "| BYOL | Grill et al.", "| VICReg | Bardes",
                "| Barlow Twins | Zbontar"):
        assert row in block, row
    assert "| `convnext_atto` | ConvNeXt | 32 px | `patch_size: 2` |" in block
    assert "| `vit_tiny_patch16_224` | Vision Transformer | 32 px | `img_size: 32`, `patch_size: 4` |" in block
    vicreg = next(line for line in block.splitlines() if line.startswith("| VICReg |"))
    assert "alone, + EquiMod" in vicreg and "0 trained, 2 recipe-only" in vicreg
    # a hand edit (here: claiming a ViT recipe for Barlow Twins) fails the check
    readme = tmp_path / "README.md"
    barlow = next(line for line in block.splitlines() if line.startswith("| Barlow Twins |"))
    readme.write_text(text.replace(barlow, barlow.replace("| — | zoo", "| alone | zoo").replace(
        "| — | 0 trained", "| alone | 0 trained")))
    assert readme.read_text() != text
    with pytest.raises(OutOfDateError, match="README.md: out of date"):
        check_model_cards(MODEL_CARDS_FILE, readme=readme)
    readme.write_text(text.replace(METHODS_BEGIN, "<!-- the methods table -->"))
    with pytest.raises(ValueError, match="no methods block"):
        check_model_cards(MODEL_CARDS_FILE, readme=readme)


@pytest.fixture
def zoo(tmp_path):
    """The shipped catalogue with every entry back to its plan: recipe-only, 800 epochs, no metrics."""
    catalogue = tmp_path / "catalogue.json"
    planned = [{**row, "status": "recipe-only", "folder": None, "sha256": None, "epochs": 800}
               for row in json.loads(CATALOGUE_FILE.read_text())]
    catalogue.write_text(json.dumps(planned))
    return SimpleNamespace(catalogue=catalogue, models=tmp_path / "models", cards=tmp_path / "MODEL_CARDS.md")


def test_table_rows_pairs_and_paper_figures(zoo):
    assert write_model_cards(zoo.cards, catalogue_path=zoo.catalogue, models_dir=zoo.models)
    text = zoo.cards.read_text()
    entries = json.loads(zoo.catalogue.read_text())
    for entry in entries:
        assert f"| `{entry['name']}` | `{entry['arch']}` |" in text
    # a recipe-only entry's epochs are the plan, and say so
    assert ("| CIFAR-10, `resnet18_cifar` | SimCLR | 800 ep planned (recipe-only) | — | — | — | 90.96 *paper*, 800 ep |\n"
            "| CIFAR-10, `resnet18_cifar` | SimCLR + EquiMod | 800 ep planned (recipe-only) | — | — | — | "
            "92.79 *paper*, 800 ep |") in text
    assert "| ImageNet-1k, `resnet50` | BYOL | 800 ep planned (recipe-only) | — | — | — | 74.03 *paper*, 800 ep |" in text
    assert "| 800 planned | — | recipe-only |" in text
    for paper in paper_table().results:
        assert f"{paper.top1:.2f} *paper*" in text
    assert not write_model_cards(zoo.cards, catalogue_path=zoo.catalogue, models_dir=zoo.models)  # idempotent
    check_model_cards(zoo.cards, catalogue_path=zoo.catalogue, models_dir=zoo.models)


def test_check_fails_after_the_registry_changes_and_publishing_regenerates(zoo, tmp_path, tiny_resnet18_cifar):
    write_model_cards(zoo.cards, catalogue_path=zoo.catalogue, models_dir=zoo.models)
    make_run_folder(tmp_path / "run", tiny_resnet18_cifar)
    publish(tmp_path / "run", repo_id="org/tiny", out=tmp_path / "out", dry_run=True)
    add_to_zoo(tmp_path / "out", "simclr_equimod_r18_cifar10", records_dirs=[records_dir(tmp_path / "run")],
               catalogue_path=zoo.catalogue, models_dir=zoo.models)
    with pytest.raises(OutOfDateError, match="out of date with the registry.*equimod-zoo model-cards"):
        check_model_cards(zoo.cards, catalogue_path=zoo.catalogue, models_dir=zoo.models)
    write_model_cards(zoo.cards, catalogue_path=zoo.catalogue, models_dir=zoo.models)
    text = zoo.cards.read_text()
    # the measured number sits beside the paper's, and the bundled card's summary is quoted
    assert ("| CIFAR-10, `resnet18_cifar` | SimCLR + EquiMod | 3 ep on 50,000 images, 5.10 s/ep on 1x NVIDIA H100 80GB HBM3 | 41.23 | 38.50 | — | "
            "92.79 *paper*, 800 ep |") in text
    assert "41.23 (CIFAR-10 linear top1)<br>38.50 (CIFAR-10 knn knn_top1) | available |" in text
    assert "### simclr_equimod_r18_cifar10" in text and "for 3 epochs (the paper trains for 800)" in text
    assert "[models/simclr_equimod_r18_cifar10/README.md]" in text
    # a bundled card edited by hand fails the check too
    card = zoo.models / "simclr_equimod_r18_cifar10" / "README.md"
    card.write_text(card.read_text().replace("| 41.23 |", "| 51.23 |"))
    with pytest.raises(OutOfDateError, match="simclr_equimod_r18_cifar10/README.md: out of date"):
        check_model_cards(zoo.cards, catalogue_path=zoo.catalogue, models_dir=zoo.models)

def test_cli_and_module_check(tmp_path, monkeypatch):
    result = CliRunner().invoke(app, ["model-cards", "--check"])
    assert result.exit_code == 0 and "up to date" in result.output
    stale = tmp_path / "MODEL_CARDS.md"
    stale.write_text("# stale\n")
    result = CliRunner().invoke(app, ["model-cards", "--check", "--path", str(stale)])
    assert result.exit_code == 2 and "out of date" in result.output
    result = CliRunner().invoke(app, ["model-cards", "--path", str(stale)])
    assert result.exit_code == 0 and "written" in result.output
    check_model_cards(stale)
    assert main(["--check"]) == 0
