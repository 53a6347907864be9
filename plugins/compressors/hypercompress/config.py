"""The settings of ``hypercompress``."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Literal

import b2s_bench as b2s
from b2s_bench import check

if TYPE_CHECKING:
    import torch

__all__ = ["HyperCompressConfig", "RECT_SCALE", "MIN_RECT_L"]

#: ``rect_l: auto``: the square's side in standard deviations of the tensor, chosen by output: with the
#: stop threshold, EfficientNet-Lite0's agreement on the photo set is 94.3 % at 4 (92.8 / 92.4 / 92.0 %
#: at 2 / 3 / 6; docs/compressors.md), and test-size transformers' output error is near rect_l 0.1's
RECT_SCALE = 4.0
#: the smallest side ``rect_l: auto`` gives (a constant tensor has no spread)
MIN_RECT_L = 1e-8


@dataclasses.dataclass(frozen=True)
class HyperCompressConfig:
    """Settings of ``hypercompress``.

    Attributes:
        variant: "released" (the released code's lattice with outlier rings; faithful to the code) or
            "canonical" (the paper's irrational winding; faithful to the method's theory).
        n: released: codewords in the square (besides the centroid); 1600 is the MobileNetV3 default.
        rect_l: released: side of the square, in weight units, or "auto": per tensor, ``rect_scale``
            times the standard deviation of its weights (at least 1e-8). The authors pick it per
            model (0.8 for MobileNetV3, 0.1 for UNet and Sheared-LLaMA); "auto" follows the weights'
            spread instead, so a transformer's small weights (std 0.02) get a square that fits them.
        rect_scale: released, with ``rect_l: auto``: the side in standard deviations of the tensor.
        class_max: released: the most outlier rings (4 for MobileNetV3).
        loss_threshold: released: the MAE a layer's class count aims for (0.001).
        set_loss_limit / loss_limit: the authors' stop threshold: keep a layer fp32 when its MAE exceeds
            ``loss_limit`` (the released code's hard-coded 0.006; on in its Sheared-LLaMA script, off in
            its MobileNetV3 and UNet scripts); applies to both variants.
        min_numel: parameters with fewer entries stay fp32 (the released code's 10).
        k / n_c / delta: canonical: group size K, trajectory length N_c (⌈log2 N_c⌉ bits a group, N_c at
            most 2^20) and step δ = 1/R (the code's first variant used R = 10).
    """

    variant: Literal["released", "canonical"] = "released"
    n: int = 1600
    rect_l: float | Literal["auto"] = "auto"
    rect_scale: float = dataclasses.field(default=RECT_SCALE, metadata=b2s.ADDED_SETTING)
    class_max: int = 4
    loss_threshold: float = 0.001
    set_loss_limit: bool = True
    loss_limit: float = 0.006
    min_numel: int = 10
    k: int = 2
    n_c: int = 4096
    delta: float = 0.1

    def side(self, w: torch.Tensor) -> float:
        """The square's side for tensor ``w``: ``rect_l``, or with "auto" ``rect_scale`` standard deviations."""
        if self.rect_l != "auto":
            return float(self.rect_l)
        return max(self.rect_scale * float(w.detach().double().std(correction=0)), MIN_RECT_L)

    def __post_init__(self) -> None:
        b2s.one_of(self.variant, ("released", "canonical"), "variant")
        check(1 <= self.n <= 1 << 20, f"n must be in 1..{1 << 20}, got {self.n}", "n")
        check(
            self.rect_l == "auto" or (isinstance(self.rect_l, float) and math.isfinite(self.rect_l) and self.rect_l > 0),
            f"rect_l must be auto or a number > 0, got {self.rect_l!r}",
            "rect_l",
        )
        check(
            math.isfinite(self.rect_scale) and self.rect_scale > 0, f"rect_scale must be > 0, got {self.rect_scale}", "rect_scale"
        )
        check(
            self.rect_l == "auto" or self.rect_scale == RECT_SCALE,
            "rect_scale applies to rect_l: auto; drop it, or write rect_l: auto",
            "rect_scale",
        )
        check(1 <= self.class_max <= 255, f"class_max must be in 1..255, got {self.class_max}", "class_max")
        check(
            (self.n + 1) * (self.class_max + 1) <= 2**32,  # indices of at most 32 bits
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
