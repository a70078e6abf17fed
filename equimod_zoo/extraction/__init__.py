"""Feature extraction: image sources, robust decoding, sharded resumable feature stores."""
