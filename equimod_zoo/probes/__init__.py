"""Frozen-feature probes: L-BFGS multinomial logistic regression and the weighted kNN classifier.

    from equimod_zoo.probes import probe_feature_folders
    report = probe_feature_folders("feats/train", "feats/test")        # `equimod-zoo linear`
    report.linear.top1, report.knn.top1
"""
from equimod_zoo.probes.frozen import FrozenProbeReport, LabelledFeatures, frozen_probe, probe_feature_folders, \
    read_labelled_features
from equimod_zoo.probes.knn import KnnResult, knn_probe
from equimod_zoo.probes.linear import LinearProbeResult, linear_probe

__all__ = ["probe_feature_folders", "frozen_probe", "FrozenProbeReport", "LabelledFeatures", "read_labelled_features",
           "linear_probe", "LinearProbeResult", "knn_probe", "KnnResult"]
