"""Self-supervised pre-training: SimCLR, BYOL and each with the EquiMod module."""
