import pytest

from equimod_zoo.model_folder import write_model_folder
from equimod_zoo.registry import Metric
from equimod_zoo.results import read_results, record_results


def test_results_are_recorded_only_for_the_weights_they_were_measured_on(tmp_path, tiny_resnet18_cifar):
    config = write_model_folder(tmp_path, tiny_resnet18_cifar, arch="resnet18_cifar")
    sha = config.equimod["weights_sha256"]
    record_results(tmp_path, [Metric("top1", "cifar10", "linear", 55.123456, "equimod-zoo linear ...", sha)])
    record_results(tmp_path, [Metric("top1", "cifar10", "linear", 56.0, "equimod-zoo linear ...", sha),
                              Metric("knn_top1", "cifar10", "knn", 50.0, "equimod-zoo linear ...", sha)])
    assert {(m.name, m.value) for m in read_results(tmp_path)} == {("top1", 56.0), ("knn_top1", 50.0)}
    with pytest.raises(ValueError, match="differs from the weights"):
        record_results(tmp_path, [Metric("top1", "cifar10", "linear", 1.0, "x", "0" * 64)])
