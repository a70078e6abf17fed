"""`equimod-zoo publish`, `convert`, `zoo-add` and `model-cards`: from runs and foreign checkpoints to the Hub
and the zoo."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from equimod_zoo.cli.errors import err_console, user_errors
from equimod_zoo.json_file import parse_json


def publish_command(
    source: str = typer.Argument(..., help="A run folder from `equimod-zoo train`, or any model folder."),
    repo_id: str = typer.Option(..., "--repo-id", help="The Hugging Face model repository, ORG/NAME."),
    out: Path = typer.Option(..., "--out", help="Where to write the Hub-ready folder."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Export and check, but upload nothing."),
    records: Optional[List[Path]] = typer.Option(None, "--records", help="A records folder (`--record` of "
                                                 "linear/transfer) whose numbers for these weights go on the card, "
                                                 "besides the zoo's; repeatable."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch to commit to (created if needed)."),
    commit_message: Optional[str] = typer.Option(None, "--commit-message", help="The Hub commit message."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Re-save the backbone as fp16 or fp32 (default: as is)."),
    with_heads: Optional[bool] = typer.Option(None, "--with-heads/--no-heads",
                                              help="Include equimod_heads.safetensors (default: when present)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it is a previous export "
                                                              "(anything else is refused)."),
) -> None:
    """Export a trained backbone in timm's Hub layout with its model card, check it, and upload it."""
    from equimod_zoo.hub.publish import publish

    with user_errors():
        result = publish(source, repo_id=repo_id, out=out, dry_run=dry_run, revision=revision,
                         commit_message=commit_message, private=private, dtype=dtype, with_heads=with_heads,
                         overwrite=overwrite, records_dirs=records or ())
    exported = result.export
    typer.echo(f"exported {exported.folder}: {exported.weights_dtype} weights, sha256 {exported.weights_sha256}, "
               f"{exported.num_results} measured result(s); plain timm reload matches the source "
               f"(max feature diff {exported.max_feature_diff:.2g})")
    typer.echo(f"uploaded to {result.commit_url}" if result.commit_url else "dry run: nothing uploaded")


def convert_command(
    checkpoint: Path = typer.Argument(..., help="A .pt/.pth/.ckpt (tensors only) or .safetensors checkpoint."),
    source: str = typer.Option(..., "--from", help="equimod-official, solo-learn, lightly or torchvision."),
    out: Path = typer.Option(..., "--out", help="The model folder to write."),
    arch: Optional[str] = typer.Option(None, "--arch", help="timm architecture (default: detected)."),
    model_args: Optional[str] = typer.Option(None, "--model-args",
                                             help='JSON constructor arguments, e.g. \'{"channels": [8,16,32,64]}\'.'),
    method: Optional[str] = typer.Option(None, "--method", help="Pre-training method to record in the metadata."),
    fp16: bool = typer.Option(False, "--fp16", help="Store the weights in float16."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if an earlier convert wrote it "
                                                              "(anything else is refused)."),
) -> None:
    """Turn a foreign ResNet checkpoint into a model folder that `equimod_zoo.load` reads."""
    import torch

    from equimod_zoo.hub.convert import convert_checkpoint

    with user_errors():
        args = _json_object(model_args, "--model-args") if model_args is not None else None
        report = convert_checkpoint(checkpoint, source=source, out=out, arch=arch, model_args=args, method=method,
                                    dtype=torch.float16 if fp16 else None, overwrite=overwrite)
    typer.echo(f"converted {checkpoint} -> {report.folder}: {report.arch} {json.dumps(report.model_args)}, "
               f"{report.backbone_keys} backbone tensors, {report.head_keys} head tensors, "
               f"sha256 {report.weights_sha256}")
    if report.ignored_keys:
        shown = ", ".join(report.ignored_keys[:5]) + (" ..." if len(report.ignored_keys) > 5 else "")
        err_console.print(f"ignored {len(report.ignored_keys)} keys outside the backbone and heads: {shown}",
                          highlight=False, soft_wrap=True)


def zoo_add_command(
    folder: Path = typer.Argument(..., help="An exported model folder (`equimod-zoo publish ... --dry-run`)."),
    name: str = typer.Option(..., "--name", help="The zoo entry to create or update."),
    records: Optional[List[Path]] = typer.Option(None, "--records", help="A records folder whose numbers for "
                                                 "these weights join the zoo's records; repeatable."),
    probe_report: Optional[Path] = typer.Option(None, "--probe-report", help="A `probe-augs --json` file of "
                                                "these weights, bundled and shown on the card."),
    hf_hub_id: Optional[str] = typer.Option(None, "--hf-hub-id", help="The Hub repository the folder was "
                                            "published to (default: the one its config.json records)."),
) -> None:
    """Maintainers: bundle an exported model into this checkout's zoo (folder, records, catalogue row, card)."""
    from equimod_zoo.hub.zoo_bundle import add_to_zoo

    with user_errors():
        entry = add_to_zoo(folder, name, hf_hub_id=hf_hub_id, records_dirs=records or (), probe_report=probe_report)
    typer.echo(f"zoo entry {entry.name}: {entry.status}, {len(entry.metrics)} recorded number(s), bundled in "
               f"{entry.bundled_folder}; run `equimod-zoo model-cards` to regenerate MODEL_CARDS.md and README.md")


def model_cards_command(
    check: bool = typer.Option(False, "--check", help="Fail when a generated document is out of date; write "
                                                      "nothing."),
    path: Optional[Path] = typer.Option(None, "--path", help="Write MODEL_CARDS.md here instead (the README is "
                                                             "then left alone)."),
) -> None:
    """Regenerate the bundled cards, MODEL_CARDS.md, README.md's results and methods tables and the timm tags."""
    from equimod_zoo.hub.model_cards import (MODEL_CARDS_FILE, PRETRAINED_TAGS_FILE, README_FILE,
                                             check_model_cards, write_model_cards)

    readme, tags = (README_FILE, PRETRAINED_TAGS_FILE) if path is None else (None, None)
    path = path or MODEL_CARDS_FILE
    shown = f"{path}" + (", the bundled cards and README.md's generated tables" if readme else " and the bundled cards")
    with user_errors():
        if check:
            check_model_cards(path, readme=readme, tags=tags)
            typer.echo(f"{shown}: up to date")
            return
        changed = write_model_cards(path, readme=readme, tags=tags)
    typer.echo(f"{shown}: {'written' if changed else 'already up to date'}")


def _json_object(text: str, option: str) -> dict:
    return parse_json(text, where=option)


def register(app: typer.Typer) -> None:
    app.command("publish")(publish_command)
    app.command("convert")(convert_command)
    app.command("zoo-add")(zoo_add_command)
    app.command("model-cards")(model_cards_command)
