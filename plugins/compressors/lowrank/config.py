"""The settings of ``lowrank``."""

from __future__ import annotations

import dataclasses
from typing import Literal

from b2s_bench import check

__all__ = ["LowRankConfig", "DEFAULT_ENERGY", "RULES"]

DEFAULT_ENERGY = 0.95
RULES = ("rank", "energy", "target_ratio")


@dataclasses.dataclass(frozen=True)
class LowRankConfig:
    """Settings of ``lowrank``. Set at most one rank rule; with none, ``energy`` is 0.95.

    Attributes:
        method: "svd" (truncated SVD of the layer reshaped to C_out × C_in·k·k) or "tucker2"
            (Tucker-2 of convs with a spatial kernel; linear layers and 1×1 convs use SVD).
        rank: a fixed rank r for every layer (Tucker-2: R_o = min(r, C_out), R_i = min(r, C_in)).
        energy: the smallest rank keeping this fraction e of Σσ² (Tucker-2: per mode, on the
            unfoldings); e = 1 keeps full rank, so every layer stays dense (the identity).
        target_ratio: per layer, the largest rank whose stored bits are at most the layer's fp32
            bits / target_ratio (at least rank 1).
        hooi_iters: HOOI refinement sweeps after HOSVD (Tucker-2 only).
        min_numel: leave weights with fewer elements raw.
        skip_first / skip_last: leave the first / last conv or linear layer raw.
    """

    method: Literal["svd", "tucker2"] = "svd"
    rank: int | None = None
    energy: float | None = None
    target_ratio: float | None = None
    hooi_iters: int = 0
    min_numel: int = 0
    skip_first: bool = False
    skip_last: bool = False

    def __post_init__(self) -> None:
        rules = {k: getattr(self, k) for k in RULES if getattr(self, k) is not None}
        check(
            len(rules) <= 1,
            "set only one of rank, energy, target_ratio, got " + ", ".join(f"{k}={v}" for k, v in rules.items()),
            sorted(rules)[-1] if rules else None,
        )
        if self.rank is not None:
            check(self.rank >= 1, f"rank must be >= 1, got {self.rank}", "rank")
        if self.energy is not None:
            check(0.0 < self.energy <= 1.0, f"energy must be in (0, 1], got {self.energy}", "energy")
        if self.target_ratio is not None:
            check(self.target_ratio >= 1.0, f"target_ratio must be >= 1, got {self.target_ratio}", "target_ratio")
        check(self.hooi_iters >= 0, f"hooi_iters must be >= 0, got {self.hooi_iters}", "hooi_iters")
        check(self.min_numel >= 0, f"min_numel must be >= 0, got {self.min_numel}", "min_numel")
        if not rules:  # the default rule, written into the config so the record shows it
            object.__setattr__(self, "energy", DEFAULT_ENERGY)
