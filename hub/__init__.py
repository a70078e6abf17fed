"""From a trained run to a Hugging Face model repository, and back from foreign checkpoints."""
