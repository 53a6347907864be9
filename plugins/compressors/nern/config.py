"""The settings of ``nern``."""

from __future__ import annotations

import dataclasses
from typing import Literal

from b2s_bench import ADDED_SETTING, check

#: the encoding's orderings and similarity measures (:mod:`.encoding`); here so that the config imports no torch
PERMUTATIONS = ("none", "infilter", "crossfilter")
SIMILARITIES = ("euclidean", "cosine")

__all__ = ["NernConfig", "DEFAULT_HIDDEN"]

DEFAULT_HIDDEN = 128


@dataclasses.dataclass(frozen=True)
class NernConfig:
    """Settings of ``nern``.

    Attributes:
        hidden: width h of the predictor's hidden layers (128 unless ``target_ratio`` is set).
        target_ratio: instead of ``hidden``, the largest width whose codes (predictor, tables and
            headers) cost at most the predicted layers' fp32 bits / target_ratio (at least 1).
        num_blocks: number of Linear layers (NeRN: 5, i.e. 3 hidden-to-hidden layers).
        levels / base: J and β of the encoding γ(p) = [sin(π β^j p), cos(π β^j p)]_{j<J}.
        kernel_size: predict convs with this square kernel (and groups == 1).
        include_grouped: also predict grouped and depthwise convs of that kernel size (not NeRN).
        permutation: "none", "infilter" or "crossfilter" kernel reordering (tables stored, counted).
        similarity: what makes kernels neighbours in those orders: "euclidean" (their distance) or
            "cosine" (NeRN's cosine similarity: the distance between the kernels scaled to unit norm).
        steps / batch_size / lr: Adam(W) steps with a cosine schedule, kernels per step (all when
            fewer), learning rate.
        optimizer / weight_decay: "adam" or "adamw", and AdamW's decoupled weight decay.
        magnitude_batching: fraction of steps whose batch is drawn in proportion to kernel norms
            (NeRN: 0.2); the others draw uniformly.
        raw_if_larger: store the layers raw when the predictor, tables and headers would cost at
            least as many bits as the kernels they predict (a small net under a default width).
        plateau_tol: the fit is reported unconverged (``info["convergence"]`` and an ``unconverged``
            caveat on the record) when its RMSE over all kernels still fell by at least this fraction
            over the last quarter of its steps, or when it ran 0 steps (``b2s.fitting.end_drop``, the
            rule RieM shares; the default 0.01 is RieM's); also when that quarter's fall per unit of
            the cosine learning rate was at least the fit's average (speed ≥ 1: the schedule, not a
            plateau, flattened the curve).
    """

    hidden: int | None = None
    target_ratio: float | None = None
    num_blocks: int = 5
    levels: int = 40
    base: float = 0.76
    kernel_size: int = 3
    include_grouped: bool = False
    permutation: Literal["none", "infilter", "crossfilter"] = "infilter"
    similarity: Literal["euclidean", "cosine"] = dataclasses.field(default="euclidean", metadata=ADDED_SETTING)
    steps: int = 2000
    batch_size: int = 4096
    lr: float = 5e-3
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = 0.0
    magnitude_batching: float = 0.2
    raw_if_larger: bool = dataclasses.field(default=True, metadata=ADDED_SETTING)
    plateau_tol: float = dataclasses.field(default=0.01, metadata=ADDED_SETTING)

    def __post_init__(self) -> None:
        check(
            self.hidden is None or self.target_ratio is None,
            f"set only one of hidden, target_ratio, got hidden={self.hidden}, target_ratio={self.target_ratio}",
            "target_ratio",
        )
        if self.target_ratio is not None:
            check(self.target_ratio > 0, f"target_ratio must be > 0, got {self.target_ratio}", "target_ratio")
        elif self.hidden is None:  # the default width, written into the config so the record shows it
            object.__setattr__(self, "hidden", DEFAULT_HIDDEN)
        else:
            check(self.hidden >= 1, f"hidden must be >= 1, got {self.hidden}", "hidden")
        check(self.num_blocks >= 2, f"num_blocks must be >= 2, got {self.num_blocks}", "num_blocks")
        check(self.levels >= 1, f"levels must be >= 1, got {self.levels}", "levels")
        check(0.0 < self.base <= 1.0, f"base must be in (0, 1], got {self.base}", "base")
        check(self.kernel_size >= 1, f"kernel_size must be >= 1, got {self.kernel_size}", "kernel_size")
        check(
            self.permutation in PERMUTATIONS,
            f"permutation must be one of {list(PERMUTATIONS)}, got {self.permutation!r}",
            "permutation",
        )
        check(
            self.similarity in SIMILARITIES,
            f"similarity must be one of {list(SIMILARITIES)}, got {self.similarity!r}",
            "similarity",
        )
        check(
            self.similarity == "euclidean" or self.permutation != "none",
            "similarity orders the kernels of a permutation; with permutation: none drop it",
            "similarity",
        )
        check(self.steps >= 0, f"steps must be >= 0, got {self.steps}", "steps")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}", "batch_size")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}", "lr")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}", "weight_decay")
        check(
            0.0 <= self.magnitude_batching <= 1.0,
            f"magnitude_batching must be in [0, 1], got {self.magnitude_batching}",
            "magnitude_batching",
        )
        check(0.0 <= self.plateau_tol < 1.0, f"plateau_tol must be in [0, 1), got {self.plateau_tol}", "plateau_tol")
