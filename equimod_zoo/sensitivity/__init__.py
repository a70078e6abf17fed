"""Augmentation-sensitivity probes: what a backbone keeps of each augmentation parameter."""
