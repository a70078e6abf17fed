"""Feature extraction: image sources, robust decoding, sharded resumable feature stores.

    from equimod_zoo.extraction import extract_features, load_features
    summary = extract_features("photos/", out="features")              # `equimod-zoo extract --images`
    summary = extract_features(dataset="flowers102", split="test", data_dir="data/flowers102")
    paths, features = load_features(summary.out)
"""
from equimod_zoo.extraction.distributed import extract_features_distributed
from equimod_zoo.extraction.extract import ExtractionSummary, extract_features
from equimod_zoo.extraction.inputs import default_out, open_inputs
from equimod_zoo.extraction.store import FeatureStore, load_features, read_info, read_metadata

__all__ = ["extract_features", "extract_features_distributed", "ExtractionSummary", "load_features", "read_info",
           "read_metadata", "FeatureStore", "open_inputs", "default_out"]
