"""The settings of ``wanda`` (torch-free)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from b2s_bench import ADDED_SETTING, check, one_of

from ..sparsegpt.config import parse_structure

__all__ = ["WandaConfig", "COMPARISON_GROUPS"]

#: where Wanda's scores are compared: per output row (the paper) or across the whole layer
COMPARISON_GROUPS = ("row", "layer")


@dataclasses.dataclass(frozen=True)
class WandaConfig:
    """Settings of ``wanda``.

    Attributes:
        sparsity: with ``structure: unstructured``, the fraction of each layer's weights removed
            (the paper: 50 %); an N:M pattern fixes it at 1 − N/M (leave it at 0.5 there).
        structure: "unstructured" or "N:M" (N of every M consecutive input weights of a row kept,
            the N highest scores; stored as sparsegpt's pattern indices: 3 bits per 4 weights at 2:4).
        comparison: unstructured only: compare the scores |W_ij|·||X_j||₂ within each output row
            (the paper's choice, Sec. 3: round(sparsity · columns) removed from every row) or across
            the whole layer (the paper's ablation, Table 7).
        calibration_samples: calibration inputs used (the paper: 128 segments of 2048 tokens of C4).
        batch_size: calibration inputs per forward (memory only).
        blocks: the block rule of the block-by-block pass ("auto" or "layers", as gptq's); later
            blocks see the pruned earlier ones' outputs, as in the authors' code.
        skip_first / skip_last: leave the first / last conv or linear layer dense
            (default: the last only, as the authors' code: a transformer's blocks, not its lm_head).
        true_sequential: within a block, prune its layers group by group (layers fed the same input:
            q/k/v, then o, then gate/up, then down in a LLaMA block), each group's input norms taken
            after the earlier groups are pruned (as gptq's; one block forward per group). It matters
            without a weight update too: o_proj's input norms are those of the pruned q/k/v's attention
            output. Default false, as the authors' code (``prune_wanda``: every layer of a block scored
            from one forward of the block, blocks in sequence on the pruned earlier blocks' outputs).
    """

    sparsity: float = 0.5
    structure: str = "unstructured"
    comparison: Literal["row", "layer"] = "row"
    calibration_samples: int = 128
    batch_size: int = 8
    blocks: Literal["auto", "layers"] = "auto"
    skip_first: bool = False
    skip_last: bool = True  # the authors run the transformer blocks only: the head (lm_head, classifier) stays dense
    true_sequential: bool = dataclasses.field(default=False, metadata=ADDED_SETTING)

    def __post_init__(self) -> None:
        check(0.0 <= self.sparsity < 1.0, f"sparsity must be in [0, 1), got {self.sparsity}", "sparsity")
        nm = parse_structure(self.structure)
        check(
            nm is None or self.sparsity == 0.5,
            f"sparsity applies to structure: unstructured; {self.structure} fixes it at 1 − N/M: drop sparsity",
            "sparsity",
        )
        one_of(self.comparison, COMPARISON_GROUPS, "comparison")
        check(
            nm is None or self.comparison == "row",
            "comparison applies to unstructured masks (N:M compares within each group of M): drop comparison",
            "comparison",
        )
        for key in ("calibration_samples", "batch_size"):
            check(getattr(self, key) >= 1, f"{key} must be >= 1, got {getattr(self, key)}", key)
        one_of(self.blocks, ("auto", "layers"), "blocks")
        check(
            isinstance(self.true_sequential, bool),
            f"true_sequential must be true or false, got {self.true_sequential!r}",
            "true_sequential",
        )

    @property
    def pattern(self) -> tuple[int, int] | None:
        return parse_structure(self.structure)
