"""Publish a trained backbone: export it and upload it to the Hugging Face Hub.

Publishing never edits the installed package: bundling a model into the zoo is the maintainer's
`equimod-zoo zoo-add` (hub/zoo_bundle.py).

The token comes from where huggingface_hub looks for it (the HF_TOKEN variable, or the cache
`hf auth login` writes); this module never reads, prints or writes it.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from huggingface_hub import HfApi

from equimod_zoo.hub.export import ExportResult, export_model
from equimod_zoo.registry import catalogue


@dataclass(frozen=True)
class PublishResult:
    export: ExportResult
    commit_url: str | None  # None for a dry run


def upload_to_hub(
    folder: str | Path,
    *,
    repo_id: str,
    revision: str | None = None,
    commit_message: str | None = None,
    private: bool = False,
) -> str:
    """Create the model repository if needed and upload `folder` as one commit; returns the commit URL."""
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True, private=private)
    if revision is not None and revision != "main":
        # upload_folder commits to an existing branch only
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        commit_message=commit_message or f"Upload {repo_id} with equimod-zoo",
        revision=revision,
    )
    return str(info.commit_url)


def publish(
    source: str | Path,
    *,
    repo_id: str,
    out: str | Path,
    dry_run: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    private: bool = False,
    dtype: Literal["fp16", "fp32"] | None = None,
    with_heads: bool | None = None,
    overwrite: bool = False,
    records_dirs: Sequence[str | Path] = (),
    zoo_name: str | None = None,
) -> PublishResult:
    """Export `source` to `out` (checked) with a card of its recorded numbers, and upload it unless `dry_run`.

    Args:
        records_dirs: records folders whose numbers for these weights go on the card, besides the zoo's.
        zoo_name: the zoo entry the card's usage names (default: the entry `source` names or bundles, if any).
    """
    exported = export_model(source, out, repo_id=repo_id, dtype=dtype, with_heads=with_heads,
                            zoo_name=zoo_name or zoo_entry_of(source), overwrite=overwrite,
                            records_dirs=records_dirs, published=not dry_run)
    commit_url = None
    if not dry_run:
        commit_url = upload_to_hub(out, repo_id=repo_id, revision=revision, commit_message=commit_message,
                                   private=private)
    return PublishResult(export=exported, commit_url=commit_url)


def zoo_entry_of(source: str | Path) -> str | None:
    """The zoo entry `source` names, or whose bundled folder it is."""
    zoo = catalogue()
    if isinstance(source, str) and source in zoo and not Path(source).exists():
        return zoo.get(source).name
    real = os.path.realpath(source)
    return next((e.name for e in zoo.entries if e.bundled_folder and os.path.realpath(e.bundled_folder) == real),
                None)
