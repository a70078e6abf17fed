"""Frozen-feature transfer to fine-grained datasets with their official splits and metrics."""
