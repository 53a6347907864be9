"""Data-access tracks and compressor families: plain names, importable without torch (reports use them)."""

from __future__ import annotations

__all__ = ["TRACKS", "FAMILIES"]

#: Data-access tracks, from least to most data (methods.md §1.2): leaderboards compare within a track.
TRACKS = ("data-free", "synthetic", "calibration", "training")
FAMILIES = ("identity", "lowrank", "pruning", "quantization", "ergodic", "inr", "distillation", "entropy", "other")
