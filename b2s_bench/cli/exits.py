"""The command line's exit codes, in one place (the README lists them)."""

from __future__ import annotations

__all__ = ["OK", "CELLS_FAILED", "USAGE", "MISSING", "CANNOT_WRITE", "INTERRUPTED", "TERMINATED"]

OK = 0  # every cell ok
CELLS_FAILED = 1  # some cell failed; its record says why, and the others still ran
USAGE = 2  # a usage or suite error (also an unknown model or a weights file that is not a checkpoint), no traceback
MISSING = 3  # a prerequisite is missing here (data, weights, a package), with what to do
CANNOT_WRITE = 4  # a folder is full or read-only: named, with the bytes needed; no cell is marked failed
INTERRUPTED = 130  # Ctrl-C: finished cells are kept, and the same command resumes
TERMINATED = 143  # SIGTERM (128 + 15): as Ctrl-C, workers stopped and finished cells kept; the same command resumes
