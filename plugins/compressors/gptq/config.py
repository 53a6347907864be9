"""The settings of ``gptq`` (torch-free)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from b2s_bench import ADDED_SETTING, check, one_of

__all__ = ["GPTQConfig", "BLOCK_RULES"]

#: how the model is split into blocks for the block-by-block pass (``b2s_bench.calibration.find_blocks``)
BLOCK_RULES = ("auto", "layers")


@dataclasses.dataclass(frozen=True)
class GPTQConfig:
    """Settings of ``gptq``.

    Attributes:
        bits: bits per weight code, 2-8 (the paper: 4 and 3).
        group_size: consecutive input columns of a row sharing a grid (the paper's LLM setting: 128);
            -1: one grid per output channel (row). A row shorter than ``group_size`` is one group.
        symmetric: false (the paper): an asymmetric min/max grid with a b-bit zero point per group;
            true: quantize's symmetric grid (zero point 0, no zero point stored).
        block_size: columns per lazy batch update (the paper: 128): the OBS updates inside a block
            are applied column by column, to the rest of the matrix once per block.
        percdamp: the damping λ added to the Hessian's diagonal, as a fraction of its mean (the paper: 1 %).
        act_order: quantize columns in order of decreasing Hessian diagonal (the authors' later
            code, ``--act-order``, where it became the default; the paper: false, in order). With
            groups, each group's grid is fixed before the pass from the original weights of its
            consecutive columns (the authors' ``--static-groups``), so the codes are stored in the
            original column order and no permutation is stored.
        scale_bits: stored precision of the scales, 16 (the authors' packed format) or 32; the scales
            are rounded to it before quantizing, so the error compensation sees the stored grid.
        calibration_samples: calibration inputs used (the paper: 128 segments of 2048 tokens of C4;
            here what the calibration track gives).
        batch_size: calibration inputs per forward (memory only: the statistics are the same).
        blocks: the block rule of the block-by-block pass: "auto" (a transformer's layers, chained;
            every other conv/linear layer on its own) or "layers" (every layer on its own).
        skip_first / skip_last: leave the first / last conv or linear layer in fp32
            (default: the last only, as the authors' code: a transformer's blocks, not its lm_head).
        true_sequential: within a block, quantize its layers group by group (layers fed the same
            input: q/k/v, then o, then gate/up, then down in a LLaMA block), each group's Hessian taken
            after the earlier groups are quantized, so it sees their error (the authors' LLaMA script,
            ``--true-sequential``; costs one block forward per group). Default false: the paper's
            order (all layers of a block from the dense block's inputs) and the authors' flag's
            default; their README's LLaMA results use it together with ``--act-order``, which is off
            here too. Records made before this setting existed are the false ones.
    """

    bits: int = 4
    group_size: int = 128
    symmetric: bool = False
    block_size: int = 128
    percdamp: float = 0.01
    act_order: bool = False
    scale_bits: int = 16
    calibration_samples: int = 128
    batch_size: int = 8
    blocks: Literal["auto", "layers"] = "auto"
    skip_first: bool = False
    skip_last: bool = True  # the authors run the transformer blocks only: the head (lm_head, classifier) stays dense
    true_sequential: bool = dataclasses.field(default=False, metadata=ADDED_SETTING)

    def __post_init__(self) -> None:
        check(isinstance(self.bits, int) and 2 <= self.bits <= 8, f"bits must be an int in 2..8, got {self.bits!r}", "bits")
        check(
            self.group_size == -1 or self.group_size >= 1,
            f"group_size must be -1 (per output channel) or >= 1, got {self.group_size}",
            "group_size",
        )
        check(self.block_size >= 1, f"block_size must be >= 1, got {self.block_size}", "block_size")
        check(0.0 < self.percdamp < 1.0, f"percdamp must be in (0, 1) (the paper: 0.01), got {self.percdamp}", "percdamp")
        check(self.scale_bits in (16, 32), f"scale_bits must be 16 or 32, got {self.scale_bits}", "scale_bits")
        for key in ("calibration_samples", "batch_size"):
            check(getattr(self, key) >= 1, f"{key} must be >= 1, got {getattr(self, key)}", key)
        one_of(self.blocks, BLOCK_RULES, "blocks")
        check(
            isinstance(self.true_sequential, bool),
            f"true_sequential must be true or false, got {self.true_sequential!r}",
            "true_sequential",
        )
