"""The baseline of bench/extract.py: the feature-extraction loop a timm user writes, as a whole process.

    python bench/plain_timm_extract.py --images DIR --out features.npy [--arch resnet50] [--model-folder DIR]

timm's own recipe and nothing more: the model's data config through
`timm.data.create_transform`, PIL decoding in a DataLoader with 2 workers, batch 32, fp32,
`model(x)` under `torch.no_grad()`, the features saved to one .npy file in file-name order.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import timm
import timm.data
import torch
from PIL import Image

EXTENSIONS = {".jpg", ".jpeg", ".png"}


class Folder(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--model-folder", type=Path, help="load these weights (timm's local-dir:), not random ones")
    args = parser.parse_args()

    if args.model_folder:
        model = timm.create_model(f"local-dir:{args.model_folder}", pretrained=True, num_classes=0).eval()
    else:
        model = timm.create_model(args.arch, pretrained=False, num_classes=0).eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in EXTENSIONS)
    loader = torch.utils.data.DataLoader(Folder(paths, transform), batch_size=32, num_workers=2)
    features = []
    with torch.no_grad():
        for x in loader:
            features.append(model(x).numpy())
    np.save(args.out, np.concatenate(features))


if __name__ == "__main__":
    main()
