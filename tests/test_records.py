"""Records of measured numbers: one file per weights sha256, replaced by key, portable commands, and no absolute
machine path in anything the zoo ships or generates."""
import json
import re
import threading

import pytest

from equimod_zoo.model_folder import write_model_folder
from equimod_zoo.records import (
    REPOSITORY,
    ZOO_RECORDS_DIR,
    Record,
    absolute_paths,
    add_records,
    command_line,
    read_records,
)
from equimod_zoo.errors import RecordsError
from equimod_zoo.registry import BUNDLED_MODELS_DIR, CATALOGUE_FILE, list_models

SHA = "ab" * 32


def _record(metric="top1", value=50.0, sha=SHA, protocol="linear", command="equimod-zoo linear --train t"):
    return Record(sha, "cifar10", "test", protocol, metric, value, command, "2026-12-01", "0.1.0", None)


def test_records_are_one_file_per_weights_and_a_new_measurement_replaces_the_old(tmp_path):
    add_records(tmp_path, [_record("top1", 55.1), _record("knn_top1", 50.0, protocol="knn")])
    add_records(tmp_path, [_record("top1", 56.0), _record("top1", 1.0, sha="cd" * 32)])
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [f"{SHA}.json", f"{'cd' * 32}.json"]
    assert [(r.metric, r.value) for r in read_records(tmp_path, SHA)] == [("top1", 56.0), ("knn_top1", 50.0)]
    assert len(read_records(tmp_path)) == 3 and read_records(tmp_path / "absent") == []
    stored = json.loads((tmp_path / f"{SHA}.json").read_text())
    assert stored["weights_sha256"] == SHA and "weights_sha256" not in stored["records"][0]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # written atomically


def test_concurrent_evaluations_both_land(tmp_path):
    threads = [threading.Thread(target=add_records, args=(tmp_path, [_record(f"m{i}", float(i))]))
               for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.metric for r in read_records(tmp_path, SHA)) == [f"m{i}" for i in range(8)]


def test_numbers_never_go_into_a_model_folder_and_bad_files_are_refused(tmp_path, tiny_resnet18_cifar):
    write_model_folder(tmp_path / "model", tiny_resnet18_cifar, arch="resnet18_cifar")
    with pytest.raises(RecordsError, match="a model folder"):
        add_records(tmp_path / "model", [_record()])
    with pytest.raises(RecordsError, match="not a sha256"):
        add_records(tmp_path / "records", [_record(sha="nope")])
    with pytest.raises(RecordsError, match="absolute path /work/rel/w/x"):
        add_records(tmp_path / "records", [_record(command="equimod-zoo linear --train /work/rel/w/x")])
    (tmp_path / "records").mkdir(exist_ok=True)
    (tmp_path / "records" / f"{SHA}.json").write_text("{not json")
    with pytest.raises(RecordsError, match=f"{SHA}.json: not valid JSON"):
        read_records(tmp_path / "records", SHA)


def test_recorded_commands_name_no_absolute_path(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "flowers102").mkdir(parents=True)
    monkeypatch.setenv("EQUIMOD_DATA", str(data))
    base = REPOSITORY or tmp_path
    monkeypatch.chdir(base)
    command = command_line([
        "/usr/bin/equimod-zoo", "transfer", "--dataset", "flowers102", "--data-dir", str(data / "flowers102"),
        "--model", str(base / "runs" / "my run" / "model"), "--json=" + str(base / "out.json"),
        "--record", str(tmp_path / "records"), "--resolution", "64", "--cache-dir", str(tmp_path / "cache")])
    assert command.startswith("equimod-zoo transfer --dataset flowers102 --data-dir $EQUIMOD_DATA/flowers102 "
                              "--model 'runs/my run/model' --json=out.json --resolution 64 --cache-dir ")
    assert "--record" not in command and absolute_paths(command) == []
    assert command.split("--cache-dir ")[1].startswith("../")  # outside the repository: relative all the same
    spec = command_line(["equimod-zoo", "transfer", "--dataset", f"imagefolder:{data / 'flowers102'}", "--dataset",
                         "hf:org/name", "--dataset-name", "cifar10"])
    assert spec == ("equimod-zoo transfer --dataset imagefolder:$EQUIMOD_DATA/flowers102 --dataset hf:org/name "
                    "--dataset-name cifar10")


def test_the_zoo_records_match_the_catalogue_and_hold_portable_commands():
    records = read_records(ZOO_RECORDS_DIR)
    assert records
    shas = {e.sha256 for e in list_models(pretrained=True)}
    assert {r.weights_sha256 for r in records} == shas  # every trained entry is measured, no orphan records
    for record in records:
        assert absolute_paths(record.command) == [], record.command
        assert record.command.startswith("equimod-zoo ") and record.date and record.version
    for entry in list_models(pretrained=True):
        assert {(m.dataset, m.protocol, m.metric) for m in entry.metrics} >= {
            ("cifar10", "linear", "top1"), ("cifar10", "knn", "knn_top1"), ("flowers102", "linear",
                                                                            "mean_per_class_accuracy")}


# an absolute path: a slash after a space, quote, backtick, bracket or `=`, then a name and another slash
_ABSOLUTE = re.compile(r"(?:^|[\s\"'`(=\[])/(?!/)[\w.-]+/")


def test_no_shipped_or_generated_file_holds_an_absolute_machine_path():
    root = CATALOGUE_FILE.parents[2]
    files = [CATALOGUE_FILE, root / "MODEL_CARDS.md", root / "README.md", *ZOO_RECORDS_DIR.glob("*.json"),
             *(p for p in BUNDLED_MODELS_DIR.rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".yaml"))]
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not _ABSOLUTE.search(line), f"{path}:{number}: {line.strip()[:160]}"


def test_a_new_record_names_the_version_the_date_and_the_commit(tmp_path, monkeypatch):
    import datetime
    import sys

    from equimod_zoo import __version__
    from equimod_zoo.records import new_record

    monkeypatch.setattr(sys, "argv", ["equimod-zoo", "linear", "--train", "t", "--record", str(tmp_path)])
    record = new_record(SHA, dataset="cifar10", split="test", protocol="linear", metric="top1", value=12.345678)
    assert record.command == "equimod-zoo linear --train t" and record.value == 12.3457
    assert record.version == __version__
    assert record.date == datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    if REPOSITORY is not None and (REPOSITORY / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", record.commit)
