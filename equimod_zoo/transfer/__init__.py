"""Frozen-feature transfer to fine-grained datasets with their official splits and metrics.

    from equimod_zoo.transfer import compare, transfer
    result = transfer("flowers102", model="simclr_equimod_r18_cifar10", data_dir="data/flowers102")
    report = compare(["simclr_r18_cifar10", "simclr_equimod_r18_cifar10"], ["flowers102"], out="cmp",
                     data_dirs={"flowers102": "data/flowers102"})                 # `equimod-zoo compare`
"""
from equimod_zoo.transfer.compare import ComparisonReport, compare
from equimod_zoo.transfer.datasets import DATASETS, TransferDataset, load_splits, resolve_dataset
from equimod_zoo.transfer.finetune import FinetuneConfig
from equimod_zoo.transfer.run import MIN_RESOLUTION, TransferResult, default_resolution, transfer

__all__ = ["transfer", "TransferResult", "compare", "ComparisonReport", "FinetuneConfig", "DATASETS",
           "TransferDataset", "resolve_dataset", "load_splits", "MIN_RESOLUTION", "default_resolution"]
