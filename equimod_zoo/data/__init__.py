"""The data layer: one dataset spec grammar, one resolver, one image decoder, the known datasets.

Every command that reads a dataset takes the same spec: `equimod-zoo train --data SPEC`,
`extract --dataset SPEC [--split S]`, `transfer --dataset SPEC [--data-dir DIR]` and
`probe-augs --dataset SPEC [--data-dir DIR]`. A spec is one of

    flowers102, cifar10, ...    a known dataset (`KNOWN_DATASETS`: Hub id, splits, columns, metric);
                                from the Hub, or from `--data-dir DIR` in any local layout below
    hf:OWNER/NAME               a Hugging Face Hub dataset (or, with --data-dir, its local copy)
    OWNER/NAME                  the same, when no such local path exists
    PATH.parquet                one parquet file: one split, named after the file (test.parquet -> test)
    DIR                         a local folder, its layout detected from its contents:
                                  parquet      DIR/SPLIT.parquet or DIR/**/SPLIT-00000-of-00002.parquet
                                               (the Hub's layout; Image and label columns)
                                  CUB_200_2011 DIR/images.txt, image_class_labels.txt,
                                               train_test_split.txt, classes.txt, images/ (DIR may
                                               hold a CUB_200_2011 folder)
                                  imagefolder  DIR/{train,val,test}/CLASS/IMAGE, or DIR/CLASS/IMAGE (one
                                               split, "train"); class folder names are the labels
    parquet:PATH, cub:DIR, imagefolder:DIR    a local path with its layout said, not detected

A known name wins over a folder of the same name: write `./cifar10` for the folder. An empty
spec is an error, never the working folder. Splits are named as in the data; `val`, `valid`
and `dev` find a `validation` split and back.

    from equimod_zoo.data import resolve_spec, open_split
    source = open_split("data/flowers102", split="test")   # an ImageSource
    source = open_split(resolve_spec("flowers102", data_dir="data/flowers102"), "test")

Beyond datasets, extraction reads a folder of images, a list of files and webdataset tar
shards (`equimod_zoo.data.streams`). Every image is decoded by `equimod_zoo.data.images.load_rgb`.
"""
from equimod_zoo.data.images import IMAGE_EXTENSIONS, DecodedImage, load_rgb, pixels_at_base
from equimod_zoo.errors import DatasetSpecError, ImageTooLargeError
from equimod_zoo.data.known import KNOWN_DATASETS, KnownDataset, known_dataset
from equimod_zoo.data.resize import resize_to_base
from equimod_zoo.data.sources import (FileListSource, HFDatasetSource, ImageSource, folder_source, imagefolder_source,
                                      scan_images)
from equimod_zoo.data.spec import DataSpec, open_split, open_splits, resolve_spec

__all__ = [
    "IMAGE_EXTENSIONS", "DecodedImage", "ImageTooLargeError", "load_rgb", "pixels_at_base", "KNOWN_DATASETS",
    "KnownDataset", "known_dataset", "resize_to_base", "FileListSource", "HFDatasetSource", "ImageSource",
    "folder_source", "imagefolder_source", "scan_images", "DataSpec", "DatasetSpecError", "open_split", "open_splits",
    "resolve_spec",
]
