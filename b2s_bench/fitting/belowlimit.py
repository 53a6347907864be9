"""When a weight error below the Gaussian rate–distortion limit is an alarm (torch-free: reports use it).

A code below D(R) = σ²·2^(−2R) has one of three explanations: it exploits structure that an i.i.d.
model ignores (correlated or low-rank weights), the weights are not Gaussian (an i.i.d. Laplacian
source can sit up to 0.63 dB below the Gaussian bound of its variance, more heavy-tailed sources
further), or its size is miscounted. Reports flag it so that someone checks which.

The bound is for a continuous source, though, and trained weights are fp32 values. At
:data:`GAP_BITS` bits per weight or more the bound (σ²·2^−32, −96 dB and below) is far under what
any storage of real numbers reaches (fp16 rounding alone is about −70 dB), so a gap there is
arithmetic without meaning: it is "n/a" (None) and never an alarm. :data:`SOURCE_BITS` is the
rate at which storing the weights as they are is exact.
"""

from __future__ import annotations

__all__ = ["SOURCE_BITS", "GAP_BITS", "BELOW_LIMIT_CAUSES", "gap_applies", "below_limit"]

#: bits per weight of the source: fp32 weights, which a code of this many bits stores losslessly
SOURCE_BITS = 32
#: from this many bits per weight on, the distance to the Gaussian limit is not reported (None)
GAP_BITS = 16
#: the three reasons a code can sit below the Gaussian limit (the ⚠ note of every report names them)
BELOW_LIMIT_CAUSES = (
    "the method exploits structure of the weights (correlated or low rank)",
    "the weights are not Gaussian (an i.i.d. Laplacian source may sit up to 0.63 dB below)",
    "the size is miscounted",
)


def gap_applies(rate: float) -> bool:
    """Whether a distance to the Gaussian limit at ``rate`` bits per weight means something (< :data:`GAP_BITS`)."""
    return rate < GAP_BITS


def below_limit(gap_db: float | None, rate: float) -> bool:
    """Whether a code ``gap_db`` dB from the Gaussian limit at ``rate`` bits per weight needs
    explaining: ``gap_db < 0`` at a rate under :data:`GAP_BITS` (None or NaN is never an alarm)."""
    return bool(gap_db is not None and gap_db < 0 and gap_applies(rate))
