"""Augmentation-sensitivity probes: what a backbone keeps of each augmentation parameter.

    from equimod_zoo.sensitivity import probe_augmentations
    report = probe_augmentations("cifar10", model="simclr_equimod_r18_cifar10",
                                 data_dir="data/cifar10-jpeg", json_path="probe.json")   # `equimod-zoo probe-augs`
"""
from equimod_zoo.sensitivity.equivariance import equivariance_metrics
from equimod_zoo.sensitivity.plot import plot_sensitivity
from equimod_zoo.sensitivity.run import probe_augmentations, write_reports

__all__ = ["probe_augmentations", "write_reports", "plot_sensitivity", "equivariance_metrics"]
