"""Rate-distortion limits and weight structure (being written)."""
