"""Importing does no work: `import equimod_zoo` reads no data file, and a bad record fails only the call that reads it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from equimod_zoo.errors import RecordsError
from equimod_zoo.registry import Catalogue, ZooEntry

ZOO = Path(__file__).resolve().parents[1] / "equimod_zoo" / "zoo"


def _opened_by(code: str) -> list[str]:
    """Every file the code opens in a fresh interpreter (the audit hook sees every open, from C too)."""
    probe = ("import sys\nopened = []\n"
             "sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == 'open' else None)\n"
             f"{code}\nprint('\\n'.join(opened))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.splitlines()


def test_importing_the_package_opens_nothing_under_the_zoo_folder():
    opened = _opened_by("import equimod_zoo, timm\nassert timm.list_pretrained('resnet18_cifar.*')")
    assert [path for path in opened if Path(path).resolve().is_relative_to(ZOO)] == []
    # while asking for a model does read the catalogue: the probe above would see it
    assert any("catalogue.json" in path for path in _opened_by("import equimod_zoo\nequimod_zoo.get_entry('simclr_r18')"))


def _entry(name: str, sha: str) -> dict:
    return ZooEntry(name=name, arch="resnet18_cifar", tag=name, method="simclr", data="cifar10", num_train_images=10,
                    epochs=1, recipe=name, license="apache-2.0", status="available", sha256=sha).to_dict()


@pytest.mark.parametrize("damage", ["{not json", '{"weights_sha256": "x"}', "[]"])
def test_a_malformed_record_fails_only_the_call_that_reads_it(tmp_path, damage):
    good, bad = "ab" * 32, "cd" * 32
    (tmp_path / "catalogue.json").write_text(json.dumps([_entry("good", good), _entry("bad", bad)]))
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / f"{bad}.json").write_text(damage)
    catalogue = Catalogue.from_file(tmp_path / "catalogue.json")  # reads no record
    assert catalogue.get("good").metrics == () and catalogue.get("bad").name == "bad"
    with pytest.raises(RecordsError, match=f"{bad}.json") as error:
        catalogue.get("bad").metrics
    assert "\n" not in str(error.value)
