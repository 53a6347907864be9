"""The settings of the activations stage (torch-free: suites load them before any model)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..config import check

__all__ = ["ActivationSettings", "RANGE_SOURCES", "RANGE_RULES"]

#: how a range is chosen from the values seen
RANGE_RULES = ("minmax", "mse")
#: where activation ranges come from
RANGE_SOURCES = ("bn", "synthetic", "calibration")
_TRACKS = {"bn": "data-free", "synthetic": "synthetic", "calibration": "calibration"}


@dataclasses.dataclass(frozen=True)
class ActivationSettings:
    """Settings of the activations stage (a suite's ``activations:``).

    Attributes:
        bits: the bits of every quantized layer input (2-16).
        ranges: "bn" (data-free, from the BatchNorm statistics), "synthetic" (inputs synthesized from
            the model: the method's own, or ZeroQ's) or "calibration" (real calibration inputs).
        rule: "minmax" (the range of the values seen) or "mse" (its shrink with the least
            fake-quantization error).
        first_input_bits: bits of the first layer's input; null keeps it at full precision (SQuant).
        last_input_bits: bits of the last layer's input (SQuant: 8); null keeps it at full precision.
        fallback: with ``ranges: bn``, what layers without a BatchNorm before them get: "synthetic"
            ranges or "skip" (full precision).
        samples: synthetic or calibration inputs the ranges are measured on.
        synthetic_iterations: Adam steps of ZeroQ's synthesis (when the method has no inputs of its own).
    """

    bits: int = 8
    ranges: Literal["bn", "synthetic", "calibration"] = "bn"
    rule: Literal["minmax", "mse"] = "mse"
    first_input_bits: int | None = None
    last_input_bits: int | None = 8
    fallback: Literal["synthetic", "skip"] = "synthetic"
    samples: int = 64
    synthetic_iterations: int = 500

    def __post_init__(self) -> None:
        for key in ("bits", "first_input_bits", "last_input_bits"):
            value = getattr(self, key)
            if key == "bits" or value is not None:
                check(
                    isinstance(value, int) and 2 <= value <= 16,
                    f"{key} must be an integer in 2..16{'' if key == 'bits' else ' or null'}, got {value!r}",
                    key,
                )
        check(self.ranges in RANGE_SOURCES, f"ranges must be one of {', '.join(RANGE_SOURCES)}, got {self.ranges!r}", "ranges")
        check(self.rule in RANGE_RULES, f"rule must be one of {', '.join(RANGE_RULES)}, got {self.rule!r}", "rule")
        check(self.fallback in ("synthetic", "skip"), f"fallback must be synthetic or skip, got {self.fallback!r}", "fallback")
        check(self.samples >= 2, f"samples must be >= 2, got {self.samples}", "samples")
        check(
            self.synthetic_iterations >= 0,
            f"synthetic_iterations must be >= 0, got {self.synthetic_iterations}",
            "synthetic_iterations",
        )

    @property
    def track(self) -> str:
        """The data this stage needs: data-free, synthetic or calibration."""
        if self.ranges == "bn":
            return "synthetic" if self.fallback == "synthetic" else "data-free"
        return _TRACKS[self.ranges]

    def layer_bits(self, names: list[str]) -> dict[str, int | None]:
        """Each layer's input bits (None: full precision), by SQuant's rule for the first and last."""
        bits: dict[str, int | None] = {n: self.bits for n in names}
        if names:
            bits[names[-1]] = self.last_input_bits
            bits[names[0]] = self.first_input_bits  # a one-layer model: the first rule wins
        return bits
