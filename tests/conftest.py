"""Shared fixtures. No test touches the network: the Hub is forced offline before anything imports it."""
from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from equimod_zoo.records import data_folder  # noqa: E402

# Tiny tensors: one thread is faster than two fighting over a busy machine, and deterministic.
torch.set_num_threads(1)

SHARED_DATA = data_folder()  # $EQUIMOD_DATA, or ../shared/data beside the checkout


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch, tmp_path_factory):
    """An empty Hugging Face cache per test, and the Hub offline even if it was imported early."""
    import huggingface_hub.constants

    cache = tmp_path_factory.mktemp("hf_cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))


@pytest.fixture
def shared_data() -> Path:
    """The data folder ($EQUIMOD_DATA, or ../shared/data beside the checkout), or a skip without one."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def tiny_resnet18_cifar():
    """A resnet18_cifar at 1/8 width: the zoo's architecture, fast enough for any test."""
    import timm

    import equimod_zoo  # noqa: F401

    torch.manual_seed(0)
    return timm.create_model("resnet18_cifar", num_classes=0, channels=(8, 16, 32, 64), stem_width=8).eval()
