"""Publish a trained backbone: export it, upload it to the Hugging Face Hub, bundle it into the zoo.

The token comes from where huggingface_hub looks for it (the HF_TOKEN variable, or the cache
`hf auth login` writes); this module never reads, prints or writes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from huggingface_hub import HfApi

from equimod_zoo.hub.export import ExportResult, export_model
from equimod_zoo.hub.zoo_bundle import add_to_zoo
from equimod_zoo.registry import BUNDLED_MODELS_DIR, CATALOGUE_FILE, ZooEntry


@dataclass(frozen=True)
class PublishResult:
    export: ExportResult
    commit_url: str | None  # None for a dry run
    zoo_entry: ZooEntry | None


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
    zoo_entry: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    private: bool = False,
    dtype: Literal["fp16", "fp32"] | None = None,
    with_heads: bool | None = None,
    overwrite: bool = False,
    catalogue_path: str | Path = CATALOGUE_FILE,
    models_dir: str | Path = BUNDLED_MODELS_DIR,
) -> PublishResult:
    """Export `source` to `out` (checked), upload it unless `dry_run`, and optionally bundle it as `zoo_entry`.

    The zoo entry records `repo_id` as its Hub repository only when the upload happened.
    """
    exported = export_model(source, out, repo_id=repo_id, dtype=dtype, with_heads=with_heads,
                            zoo_name=zoo_entry, overwrite=overwrite)
    commit_url = None
    if not dry_run:
        commit_url = upload_to_hub(out, repo_id=repo_id, revision=revision, commit_message=commit_message,
                                   private=private)
    entry = None
    if zoo_entry is not None:
        entry = add_to_zoo(out, zoo_entry, hf_hub_id=None if dry_run else repo_id,
                           catalogue_path=catalogue_path, models_dir=models_dir)
    return PublishResult(export=exported, commit_url=commit_url, zoo_entry=entry)
