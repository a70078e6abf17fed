"""Hostile YAML (issue 23, class 5): aliases that expand to gigabytes, tags that ask for code, nesting that
exhausts the parser, and text that does not parse are one line at once, in every file and option we read."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hostile import one_line_error, run_capped, snapshot
from PIL import Image
from typer.testing import CliRunner

from equimod_zoo.cli import app
from equimod_zoo.errors import UserError
from equimod_zoo.limits import MAX_YAML_BYTES
from equimod_zoo.training.recipe import load_recipe
from equimod_zoo.yaml_io import dump_yaml, load_yaml

# Nine levels of nine aliases: 9**9 = 387 million leaves from about 500 bytes of text.
LAUGHS = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n" + "".join(
    f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    (folder / "cls").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(folder / "cls" / f"{i}.png")
    return folder


def _train(*extra, images, out):
    return ["train", "--data", str(images), "--out", str(out), "--device", "cpu", *extra]


def test_attacks_in_recipes_and_set_values_are_one_line_at_once_in_bounded_memory(tmp_path, images):
    assert len(LAUGHS) < 600
    recipes = {
        "laughs": "base: simclr_r18_cifar10_cpu\n" + LAUGHS,
        "python_tag": "base: simclr_r18_cifar10_cpu\nseed: !!python/object/apply:os.system ['touch pwned']\n",
        "deep": "base: simclr_r18_cifar10_cpu\nseed: " + "[" * 5000 + "]" * 5000 + "\n",
        "huge": "base: simclr_r18_cifar10_cpu\n" + "# padding\n" * (MAX_YAML_BYTES // 10 + 1),
        "broken": "base: simclr_r18_cifar10_cpu\nseed: [1\n",
    }
    for name, text in recipes.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    laughs_value = "{" + LAUGHS.strip().replace("\n", ", ") + "}"  # the same, as one flow mapping
    cases = {
        "laughs": (_train("--recipe", str(tmp_path / "laughs.yaml"), images=images, out=tmp_path / "r1"),
                   ("laughs.yaml, line 2", "aliases")),
        "python_tag": (_train("--recipe", str(tmp_path / "python_tag.yaml"), images=images, out=tmp_path / "r2"),
                       ("python_tag.yaml", "python/object/apply", "not accepted")),
        "deep": (_train("--recipe", str(tmp_path / "deep.yaml"), images=images, out=tmp_path / "r3"),
                 ("deep.yaml", "nested deeper than the limit of 32")),
        "huge": (_train("--recipe", str(tmp_path / "huge.yaml"), images=images, out=tmp_path / "r4"),
                 ("huge.yaml", f"over the limit of {MAX_YAML_BYTES:,} bytes")),
        "broken": (_train("--recipe", str(tmp_path / "broken.yaml"), images=images, out=tmp_path / "r5"),
                   ("broken.yaml, line 3", "not valid YAML")),
        "set_laughs": (_train("--recipe", "simclr_r18_cifar10_cpu", "--set", f"seed={laughs_value}",
                              images=images, out=tmp_path / "r6"), ("--set seed", "aliases")),
        "set_python": (_train("--recipe", "simclr_r18_cifar10_cpu", "--set",
                              "seed=!!python/object/apply:os.system ['touch pwned']", images=images,
                              out=tmp_path / "r7"), ("--set seed", "not accepted")),
        "set_broken": (_train("--recipe", "simclr_r18_cifar10_cpu", "--set", "optim.lr=[0.1", images=images,
                              out=tmp_path / "r8"), ("--set optim.lr", "not valid YAML")),
    }
    before = snapshot(images)
    results = run_capped([argv for argv, _ in cases.values()], cwd=tmp_path, timeout=120)
    for (name, (_, needles)), result in zip(cases.items(), results):
        one_line_error(result, *needles)
        assert not (tmp_path / f"r{list(cases).index(name) + 1}").exists(), name
    assert not (tmp_path / "pwned").exists()
    assert snapshot(images) == before


def test_the_reader_refuses_what_plain_data_does_not_need():
    assert load_yaml("a: 1\nb: [x, 2.5]\nc: {d: null}\n", where="t") == {"a": 1, "b": ["x", 2.5], "c": {"d": None}}
    for text, message in [("a: &x 1\nb: *x\n", "t, line 1 column 4: anchors and aliases"),
                          ("a: !!binary aGk=\n", "tag tag:yaml.org,2002:binary is not accepted"),
                          ("a: !custom 1\n", "tag !custom is not accepted"),
                          ("<<: {a: 1}\nb: [\n", "not valid YAML")]:
        with pytest.raises(UserError, match=message):
            load_yaml(text, where="t")


def test_what_we_write_reads_back_even_with_shared_values():
    shared = [1, 2]
    text = dump_yaml({"a": shared, "b": shared})
    assert "&" not in text and load_yaml(text, where="t") == {"a": [1, 2], "b": [1, 2]}
    recipe = load_recipe("byol_equimod_r18_cifar10")
    assert load_yaml(recipe.to_yaml(), where="recipe") == recipe.to_dict()


def test_the_campaign_queue_is_read_by_the_same_reader(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from campaign import read_queue

    queue = tmp_path / "queue.yaml"
    queue.write_text("items:\n  - &one {id: a, models: [byol_r18_cifar10]}\n  - *one\n")
    before = queue.read_bytes()
    with pytest.raises(UserError, match="queue.yaml, line 2 column 5: anchors and aliases"):
        read_queue(queue)
    assert queue.read_bytes() == before


def test_set_values_still_parse_as_yaml(tmp_path, images):
    result = CliRunner().invoke(app, _train("--recipe", "simclr_r18_cifar10_cpu", "--set", "optim.nope=1",
                                            images=images, out=tmp_path / "run"))
    one_line_error(result, "optim.nope")  # a parsed value reaches the recipe, which names the unknown key
