"""Where b2s-bench keeps files it can rebuild: the cache (zoo weights, downloads, reference outputs)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """``$B2S_BENCH_CACHE``, else ``$XDG_CACHE_HOME/b2s-bench``, else ``~/.cache/b2s-bench``."""
    root = os.environ.get("B2S_BENCH_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "b2s-bench"
