"""The settings of ``ecsq``."""

from __future__ import annotations

import dataclasses
import math

from b2s_bench import check

__all__ = ["ECSQConfig", "DEFAULT_LAMBDA_SCALE", "MAX_RATE"]

#: λ = c·Δ² with c = ln 2 / 6: the slope −dD/dR of a uniform quantizer at high rate, where
#: D ≈ Δ²/12 and D falls by a factor 4 a bit (dD/dR = −2·ln 2·D = −(ln 2/6)·Δ²)
DEFAULT_LAMBDA_SCALE = math.log(2) / 6
#: the highest rate accepted, the identity check: at steps this fine nearly every weight has its own
#: index, so the rate is about log2 N + width + 12 (the model names every index), and 64 bits buy the
#: finest step the code allows, max|w|·2^−30, for layers of up to 2^22 weights (measured), and
#: max|w|·2^−21 or finer up to 2^30: errors below the fp32 resolution of the largest weights. Rates
#: of 32 or more store more than fp32.
MAX_RATE = 64.0


@dataclasses.dataclass(frozen=True)
class ECSQConfig:
    """Settings of ``ecsq``.

    Attributes:
        rate: bits per weight after entropy coding, per tensor: the step Δ is bisected until the
            empirical entropy of the indices plus the estimated probability model (per weight) is at
            most ``rate`` (2-4 are typical; 64 gives errors below fp32 resolution: the identity check).
        rdo: rate-distortion optimised rounding: each weight takes, among round(w/Δ) and its two
            neighbours, the index minimising (w − Δq)² + λ·(−log2 p(q)), alternated with the
            histogram p (``rdo_iterations`` times); off: round to nearest.
        rdo_lambda_scale: c in λ = c·Δ² (default ln 2 / 6, the high-rate slope of a uniform
            quantizer's D(R); larger values trade more distortion for fewer bits at a given Δ).
        rdo_iterations: alternations of the index choice and the histogram (at most; it stops early
            when no index changes).
        rate_tolerance: bits per weight: the bisection stops once the rate reached is within this
            below ``rate`` (or the bracket of Δ is below fp32 resolution).
        model_count_bits: bits of one field of the probability model table in the estimate of what the
            ``entropy`` stage stores with the indices (12: its ANS count precision by default; a
            Huffman code-length field takes about 4-5 bits, so 12 over-estimates that).
        min_numel: leave weights with fewer elements raw (fp32).
        skip_first / skip_last: leave the first / last conv or linear layer raw.
    """

    rate: float = 4.0
    rdo: bool = False
    rdo_lambda_scale: float = DEFAULT_LAMBDA_SCALE
    rdo_iterations: int = 4
    rate_tolerance: float = 1e-3
    model_count_bits: int = 12
    min_numel: int = 0
    skip_first: bool = False
    skip_last: bool = False

    def __post_init__(self) -> None:
        check(
            isinstance(self.rate, (int, float)) and 0.0 < self.rate <= MAX_RATE,
            f"rate must be in (0, {MAX_RATE:g}] bits per weight, got {self.rate}",
            "rate",
        )
        check(self.rdo_lambda_scale >= 0, f"rdo_lambda_scale must be >= 0, got {self.rdo_lambda_scale}", "rdo_lambda_scale")
        check(self.rdo_iterations >= 1, f"rdo_iterations must be >= 1, got {self.rdo_iterations}", "rdo_iterations")
        check(
            0.0 < self.rate_tolerance < 1.0,
            f"rate_tolerance must be in (0, 1) bits per weight, got {self.rate_tolerance}",
            "rate_tolerance",
        )
        check(
            1 <= self.model_count_bits <= 32,
            f"model_count_bits must be in 1..32, got {self.model_count_bits}",
            "model_count_bits",
        )
        check(self.min_numel >= 0, f"min_numel must be >= 0, got {self.min_numel}", "min_numel")
