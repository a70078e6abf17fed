"""The floor under bench/extract.py: the network extraction runs, alone, on random pixels, as a whole process.

    python bench/model_forward.py --model-folder DIR --num-images 1024 [--batch-size 64]

No file is read or decoded: `equimod_zoo.extraction.extract.inference_network` (BatchNorm
folded, channels-last, inference mode, fp32) runs over `--num-images` random images at the
model's own input size, in batches of our default size. Whatever a pipeline does around the
network, on this precision it cannot take less time than this; bench/extract.py prints it as
the last row (`--floor`) to show how far the 5x target is from what the CPU can do.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import timm
import timm.data
import torch

from equimod_zoo.extraction.extract import inference_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-folder", type=Path, required=True, help="a model folder (timm's local-dir:)")
    parser.add_argument("--num-images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    model = timm.create_model(f"local-dir:{args.model_folder}", pretrained=True, num_classes=0)
    network = inference_network(model)
    size = timm.data.resolve_data_config({}, model=model)["input_size"]
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for start in range(0, args.num_images, args.batch_size):
            count = min(args.batch_size, args.num_images - start)
            pixels = torch.randn(count, *size, generator=generator).contiguous(memory_format=torch.channels_last)
            network(pixels)
    print(f"{args.num_images} random images through the network, batch {args.batch_size}")


if __name__ == "__main__":
    main()
