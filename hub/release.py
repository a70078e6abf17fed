"""Releasing a CIFAR-10 run into the zoo: every number measured by our own commands, on the weights the zoo ships.

`release_model(RUN, NAME)` does, in order:
1. exports RUN as an fp16 model folder WORK/NAME (`publish --dry-run --dtype fp16`): the weights the zoo
   will ship, so every number below is measured on exactly those weights (their sha256 keys the records);
2. the CIFAR-10 linear probe and kNN on frozen features of the train and test splits -> WORK/records;
3. the Flowers-102 linear transfer at 64 px on fp32 features (transfer's defaults, spelled out) -> WORK/records;
4. the augmentation-sensitivity probes -> WORK/probe_augs.json;
5. with `bundle`, adds the folder to the zoo as NAME with its records and probe report (`zoo-add`), then
   regenerates the cards, MODEL_CARDS.md and the README's results table (`model-cards`);
6. with `upload`, publishes the bundled model to the Hub once and records its repository in the zoo.
Each record names the command a user retypes from the repository root to measure it again (data as
`$EQUIMOD_DATA/...`), as if each step had been typed. Nothing writes into the weights folder after step 1;
WORK defaults to release/NAME. The export is not redone and extraction resumes: a release that stopped continues.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from equimod_zoo.atomic import atomic_write_text
from equimod_zoo.constants import PROBE_FILE, WEIGHTS_FILE
from equimod_zoo.records import REPOSITORY, add_records, command_line, data_folder

# Only EquiMod's heads serve a user (the eq-gain of probe-augs): plain models are bundled without them.
_HEADS_FOR = "equimod"


@dataclass(frozen=True)
class Release:
    """What `release_model` produced."""

    folder: Path  # the fp16 model folder the numbers were measured on
    records: Path
    probe_report: Path
    bundled: bool
    results: dict[str, float] = field(default_factory=dict)


def release_model(run: str | Path, name: str, *, work: str | Path | None = None, data: str | Path | None = None,
                  with_heads: bool | None = None, bundle: bool = True, upload: bool = False,
                  device: str | None = None, probe_images: int = 2000, limit: int | None = None) -> Release:
    """Measure `run` (a run or model folder) as the zoo entry `name`, and bundle it (see the module docstring).

    Args:
        work: where the fp16 folder, features, records and reports go (default: release/NAME in the checkout).
        data: the data folder holding cifar10-jpeg/ and flowers102/ (default: $EQUIMOD_DATA or ../shared/data).
        with_heads: bundle equimod_heads.safetensors (default: for EquiMod models only).
        bundle: add the folder to the zoo and regenerate the documents; False measures only.
        upload: then publish the bundled model to the Hub once.
        probe_images, limit: the probes' image count, and a cap on each split (quick checks only).
    """
    from equimod_zoo.extraction.extract import extract_features
    from equimod_zoo.hub.model_cards import PRETRAINED_TAGS_FILE, README_FILE, write_model_cards
    from equimod_zoo.hub.publish import publish
    from equimod_zoo.hub.zoo_bundle import add_to_zoo
    from equimod_zoo.probes.frozen import probe_feature_folders
    from equimod_zoo.sensitivity.run import probe_augmentations, write_reports
    from equimod_zoo.transfer.run import transfer

    base = REPOSITORY or Path.cwd()
    work = Path(work) if work is not None else base / "release" / name
    data = Path(data) if data is not None else data_folder()
    folder, records = work / name, work / "records"
    cifar, flowers = data / "cifar10-jpeg", data / "flowers102"
    repo_id = f"equimod-zoo/{name}"
    if with_heads is None:
        with_heads = _HEADS_FOR in name
    quick = ["--limit", str(limit)] if limit else []

    if not (folder / WEIGHTS_FILE).is_file():
        publish(run, repo_id=repo_id, out=folder, dry_run=True, dtype="fp16", with_heads=with_heads)
    results: dict[str, float] = {}
    for split in ("train", "test"):  # fp32 features: the same numbers on every machine
        extract_features(dataset=str(cifar), split=split, limit=limit, out=work / f"cifar10-{split}", model=folder,
                         device=device, precision="fp32")
    report = probe_feature_folders(work / "cifar10-train", work / "cifar10-test", device=device)
    atomic_write_text(work / "cifar10-linear.json", json.dumps(report.to_dict(), indent=2) + "\n")
    add_records(records, report.records(dataset="cifar10", command=command_line(
        ["equimod-zoo", "linear", "--train", str(work / "cifar10-train"), "--test", str(work / "cifar10-test"),
         "--dataset-name", "cifar10", "--json", str(work / "cifar10-linear.json")])))
    results.update(cifar10_linear_top1=report.linear.top1, cifar10_knn_top1=report.knn.top1)
    flowers_result = transfer("flowers102", model=folder, data_dir=flowers, resolution=64, precision="fp32",
                              device=device, progress=False, limit=limit)
    atomic_write_text(work / "flowers102-linear.json", json.dumps(flowers_result.to_dict(), indent=2) + "\n")
    add_records(records, [flowers_result.as_record(command=command_line(
        ["equimod-zoo", "transfer", "--dataset", "flowers102", "--data-dir", str(flowers), "--model", str(folder),
         "--resolution", "64", "--precision", "fp32", "--json", str(work / "flowers102-linear.json"), *quick]))])
    results[f"flowers102_{flowers_result.metric}"] = flowers_result.score
    probe_report = work / PROBE_FILE
    write_reports(probe_augmentations("cifar10", model=folder, data_dir=cifar, num_images=probe_images,
                                      device=device), probe_report)
    if bundle:
        add_to_zoo(folder, name, records_dirs=[records], probe_report=probe_report)
        write_model_cards(readme=README_FILE, tags=PRETRAINED_TAGS_FILE)
        if upload:
            published = work / f"hf-{name}"
            publish(name, repo_id=repo_id, out=published, overwrite=True)
            add_to_zoo(published, name)  # the upload's folder records its repository
            write_model_cards(readme=README_FILE, tags=PRETRAINED_TAGS_FILE)
    return Release(folder=folder, records=records, probe_report=probe_report, bundled=bundle, results=results)

