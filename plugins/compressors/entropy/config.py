"""The settings of ``entropy``."""

from __future__ import annotations

import dataclasses
from typing import Literal

from b2s_bench import check, one_of

from .ans import constriction

#: the longest Huffman code the decoder's 32-bit windows can read (a window starts up to 7 bits into a byte)
MAX_LENGTH = 24

__all__ = ["EntropyConfig"]


@dataclasses.dataclass(frozen=True)
class EntropyConfig:
    """Settings of ``entropy`` (a later pipeline stage: it codes the earlier stages' symbol streams).

    Attributes:
        coder: "huffman" (canonical, length-limited Huffman in numpy; the stored model is the
            code-length table) or "ans" (constriction's ANS coder; the stored model is the counts
            quantized to ``ans_precision`` bits; needs ``pip install "b2s-bench[entropy]"``).
        max_code_length: the longest Huffman code, 1 to 24 (package-merge gives the optimal lengths
            under it); a stream with more used symbols than ``2**max_code_length`` is an error.
        ans_precision: bits per quantized count of the ANS model, 2 to 16 (the most frequent symbol
            gets ``2**ans_precision - 1``; every used symbol at least 1).
        keep_if_larger: keep a stream at its fixed width when its coded bytes plus its model are not
            smaller than the fixed-width stream (True); False codes every non-empty stream anyway.
    """

    coder: Literal["huffman", "ans"] = "huffman"
    max_code_length: int = 24
    ans_precision: int = 12
    keep_if_larger: bool = True

    def __post_init__(self) -> None:
        one_of(self.coder, ("huffman", "ans"), "coder")
        check(
            1 <= self.max_code_length <= MAX_LENGTH,
            f"max_code_length must be in 1..{MAX_LENGTH}, got {self.max_code_length}",
            "max_code_length",
        )
        check(2 <= self.ans_precision <= 16, f"ans_precision must be in 2..16, got {self.ans_precision}", "ans_precision")
        if self.coder == "ans":
            constriction()  # missing: a MissingPrerequisite when the suite is read, before anything runs
