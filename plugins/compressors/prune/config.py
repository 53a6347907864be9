"""The settings of ``prune``."""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Literal

from b2s_bench import ADDED_SETTING, check, one_of

__all__ = ["PruneConfig", "POSITIONS"]

#: how a sparse tensor stores the positions of its kept weights (see :mod:`.codes`)
POSITIONS = ("auto", "relative")
#: what channel pruning does with a transformer's residual stream (see ``PruneConfig.residual``)
RESIDUAL = ("auto", "keep", "prune")


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    """Settings of ``prune``.

    Attributes:
        sparsity: fraction of the targeted weights removed, in [0, 1).
        scope: "global" (one threshold across layers) or "layer" (the same sparsity in each).
        method: "magnitude" (unstructured) or "channel" (structured filters via torch-pruning; on
            transformers the attention heads' dimensions and the MLPs' hidden units).
        skip_first / skip_last: leave the first / last conv or linear layer dense.
        positions: how a sparse tensor stores where its kept weights are: "auto" (the cheaper of a
            bitmask and CSR column indices) or "relative" (Deep Compression's relative indices: the
            gap to the previous kept weight in ``index_bits`` bits, a filler zero where a gap
            overflows; the largest code marks a filler, so a filler stays a pruned zero whatever a
            later stage does to its stored value). Either way a tensor is stored dense where that
            is no bigger. Only with ``method: magnitude``.
        index_bits: bits per relative index, 1-16 (the paper: 8 for conv layers, 5 for fully
            connected ones); with ``positions: relative``.
        layer_index_bits: index bits by tensor name, overriding ``index_bits``: ``{glob pattern:
            bits}``, the first pattern (in the order written) matching the weight's key
            (``features.0.weight``) wins, e.g. ``{"features.*": 8, "classifier.*": 5}``.
        residual: with ``method: channel``: "auto" keeps the width of a transformer's residual stream
            (the channels coupled to a LayerNorm, on models with ``qkv``/``num_heads`` attention)
            and prunes it elsewhere; "keep" always keeps it; "prune" prunes it too (ViT runs; Swin's
            patch merging does not, and is refused).
        reach_sparsity: with ``method: channel``: change torch-pruning's channel ratio (up to 6 more
            tries, by asked / achieved, bisecting once bracketed) until the conv/linear weights removed
            reach ``sparsity`` without overshooting it by more than 10 % (relative): raised where
            layers must stay, lowered on a plain CNN, where a channel ratio r removes about
            1 − (1 − r)² of the weights; false: ``sparsity`` is the channel ratio as given
            (torch-pruning's meaning).
    """

    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "global"
    method: Literal["magnitude", "channel"] = "magnitude"
    skip_first: bool = False
    skip_last: bool = False
    positions: Literal["auto", "relative"] = dataclasses.field(default="auto", metadata=ADDED_SETTING)
    index_bits: int = dataclasses.field(default=5, metadata={**ADDED_SETTING, "range": "1..16"})
    layer_index_bits: dict[str, int] = dataclasses.field(default_factory=dict, metadata=ADDED_SETTING)
    residual: Literal["auto", "keep", "prune"] = dataclasses.field(default="auto", metadata=ADDED_SETTING)
    reach_sparsity: bool = dataclasses.field(default=True, metadata=ADDED_SETTING)

    def __post_init__(self) -> None:
        check(0.0 <= self.sparsity < 1.0, f"sparsity must be in [0, 1), got {self.sparsity}", "sparsity")
        one_of(self.positions, POSITIONS, "positions")
        one_of(self.residual, RESIDUAL, "residual")
        check(
            isinstance(self.reach_sparsity, bool),
            f"reach_sparsity must be true or false, got {self.reach_sparsity!r}",
            "reach_sparsity",
        )
        check(
            isinstance(self.index_bits, int) and not isinstance(self.index_bits, bool) and 1 <= self.index_bits <= 16,
            f"index_bits must be an int in 1..16, got {self.index_bits!r}",
            "index_bits",
        )
        for pattern, value in self.layer_index_bits.items():
            check(
                isinstance(pattern, str) and isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 16,
                f"layer_index_bits maps a glob pattern to bits in 1..16, got {pattern!r}: {value!r} "
                '(write e.g. layer_index_bits: {"features.*": 8, "classifier.*": 5})',
                "layer_index_bits",
            )
        if self.positions == "auto":
            check(
                self.index_bits == 5 and not self.layer_index_bits,
                "index_bits and layer_index_bits apply to relative positions: add positions: relative",
                "index_bits" if self.index_bits != 5 else "layer_index_bits",
            )
        check(
            self.positions == "auto" or self.method == "magnitude",
            "positions: relative stores the positions of unstructured pruning; channel pruning stores smaller "
            "dense tensors: drop positions, or use method: magnitude",
            "positions",
        )

    def index_bits_for(self, name: str) -> int:
        """The relative-index width for the tensor ``name`` (a later stage's ``key/payload``: matched on ``key``)."""
        key = name.split("/", 1)[0]
        for pattern, value in self.layer_index_bits.items():
            if fnmatch.fnmatchcase(key, pattern):
                return value
        return self.index_bits

    @property
    def track(self) -> str:
        return "data-free"
