"""Codes and sizes: what a compressor returns and what it costs (internal; the public names are at the top level)."""
