"""Datasets and images: how they are named, found, decoded and stored for training and extraction."""
