"""When a weight error below the Gaussian rate–distortion limit is an alarm (torch-free: reports use it).

A code below D(R) = σ²·2^(−2R) either exploits structure that an i.i.d. model ignores or counts its
size wrong, and reports flag it. The bound is for a continuous source, though, and trained weights
are fp32 values: at :data:`SOURCE_BITS` bits per weight or more, storing them as they are is exact,
so no error there, zero included, is below what is possible (identity cells are not alarms).
"""

from __future__ import annotations

__all__ = ["SOURCE_BITS", "below_limit"]

#: bits per weight of the source: fp32 weights, which a code of this many bits stores losslessly
SOURCE_BITS = 32


def below_limit(gap_db: float, rate: float) -> bool:
    """Whether a code ``gap_db`` dB from the Gaussian limit at ``rate`` bits per weight needs
    explaining: ``gap_db < 0`` at a rate under :data:`SOURCE_BITS` (NaN is never an alarm)."""
    return bool(gap_db < 0 and rate < SOURCE_BITS)
