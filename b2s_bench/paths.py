"""Where b2s-bench keeps files it can rebuild: the cache (zoo weights, downloads, reference outputs)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["cache_dir", "file_digest"]

_DIGESTS: dict[tuple[str, int, int], str] = {}


def cache_dir() -> Path:
    """``$B2S_BENCH_CACHE``, else ``$XDG_CACHE_HOME/b2s-bench``, else ``~/.cache/b2s-bench``."""
    root = os.environ.get("B2S_BENCH_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "b2s-bench"


def file_digest(path: str | os.PathLike[str], length: int = 16) -> str:
    """The first ``length`` hex digits of a file's SHA-256 (16: what weights a cell really loads, for
    cell ids; 64: the whole digest, to check a shipped file).

    Kept per process by (path, size, mtime), so a suite whose cells share a checkpoint hashes it once.
    """
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key][:length]
