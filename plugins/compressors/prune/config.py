"""The settings of ``prune``."""

from __future__ import annotations

import dataclasses
from typing import Literal

from b2s_bench import check

__all__ = ["PruneConfig"]


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    """Settings of ``prune``.

    Attributes:
        sparsity: fraction of the targeted weights removed, in [0, 1).
        scope: "global" (one threshold across layers) or "layer" (the same sparsity in each).
        method: "magnitude" (unstructured) or "channel" (structured filters via torch-pruning).
        skip_first / skip_last: leave the first / last conv or linear layer dense.
    """

    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "global"
    method: Literal["magnitude", "channel"] = "magnitude"
    skip_first: bool = False
    skip_last: bool = False

    def __post_init__(self) -> None:
        check(0.0 <= self.sparsity < 1.0, f"sparsity must be in [0, 1), got {self.sparsity}", "sparsity")

    @property
    def track(self) -> str:
        return "data-free"
