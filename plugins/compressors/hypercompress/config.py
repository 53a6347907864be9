"""The settings of ``hypercompress``."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import b2s_bench as b2s
from b2s_bench import ceil_log2, check

__all__ = ["HyperCompressConfig"]


@dataclasses.dataclass(frozen=True)
class HyperCompressConfig:
    """Settings of ``hypercompress``.

    Attributes:
        variant: "released" (the released code's lattice with outlier rings; faithful to the code) or
            "canonical" (the paper's irrational winding; faithful to the method's theory).
        n: released: codewords in the square (besides the centroid); 1600 is the MobileNetV3 default.
        rect_l: released: side of the square, in weight units (0.8 for MobileNetV3).
        class_max: released: the most outlier rings (4 for MobileNetV3).
        loss_threshold: released: the MAE a layer's class count aims for (0.001).
        set_loss_limit / loss_limit: keep a layer fp32 when its MAE exceeds ``loss_limit`` (the released
            code's hard-coded 0.006); applies to both variants.
        min_numel: parameters with fewer entries stay fp32 (the released code's 10).
        k / n_c / delta: canonical: group size K, trajectory length N_c (⌈log2 N_c⌉ bits a group, N_c at
            most 2^20) and step δ = 1/R (the code's first variant used R = 10).
    """

    variant: Literal["released", "canonical"] = "released"
    n: int = 1600
    rect_l: float = 0.8
    class_max: int = 4
    loss_threshold: float = 0.001
    set_loss_limit: bool = False
    loss_limit: float = 0.006
    min_numel: int = 10
    k: int = 2
    n_c: int = 4096
    delta: float = 0.1

    def __post_init__(self) -> None:
        b2s.one_of(self.variant, ("released", "canonical"), "variant")
        check(1 <= self.n <= 1 << 20, f"n must be in 1..{1 << 20}, got {self.n}", "n")
        check(math.isfinite(self.rect_l) and self.rect_l > 0, f"rect_l must be > 0, got {self.rect_l}", "rect_l")
        check(1 <= self.class_max <= 255, f"class_max must be in 1..255, got {self.class_max}", "class_max")
        check(
            ceil_log2((self.n + 1) * (self.class_max + 1)) <= 32,
            f"n={self.n} with class_max={self.class_max} needs indices wider than 32 bits",
            "class_max",
        )
        check(
            math.isfinite(self.loss_threshold) and self.loss_threshold >= 0,
            f"loss_threshold must be >= 0, got {self.loss_threshold}",
            "loss_threshold",
        )
        check(
            math.isfinite(self.loss_limit) and self.loss_limit > 0, f"loss_limit must be > 0, got {self.loss_limit}", "loss_limit"
        )
        check(self.min_numel >= 1, f"min_numel must be >= 1, got {self.min_numel}", "min_numel")
        check(1 <= self.k <= 8, f"k must be in 1..8, got {self.k}", "k")
        check(2 <= self.n_c <= 1 << 20, f"n_c must be in 2..{1 << 20}, got {self.n_c}", "n_c")
        check(math.isfinite(self.delta) and self.delta > 0, f"delta must be > 0, got {self.delta}", "delta")
