"""The settings of ``sparsegpt`` (torch-free); :func:`parse_structure` is shared with ``wanda``."""

from __future__ import annotations

import dataclasses
from typing import Literal

from b2s_bench import ADDED_SETTING, ConfigError, check, one_of

__all__ = ["SparseGPTConfig", "parse_structure", "STRUCTURE_HELP"]

STRUCTURE_HELP = (
    '"unstructured" (``sparsity`` of each layer\'s weights removed) or "N:M" (N of every M consecutive '
    'weights of a row kept, e.g. "2:4": 50 %, the pattern of sparse tensor cores)'
)


def parse_structure(structure: str, key: str = "structure") -> tuple[int, int] | None:
    """None for "unstructured", else (N kept, M) of an "N:M" pattern (1 <= N < M <= 16)."""
    if structure == "unstructured":
        return None
    parts = structure.split(":") if isinstance(structure, str) else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"{key} must be 'unstructured' or 'N:M' such as '2:4', got {structure!r}", key)
    n, m = int(parts[0]), int(parts[1])
    if not 1 <= n < m <= 16:
        raise ConfigError(f"{key} N:M needs 1 <= N < M <= 16 (N kept of every M), got {structure!r}", key)
    return n, m


@dataclasses.dataclass(frozen=True)
class SparseGPTConfig:
    """Settings of ``sparsegpt``.

    Attributes:
        sparsity: with ``structure: unstructured``, the fraction of each layer's weights removed
            (the paper: 50 %); an N:M pattern fixes it at 1 − N/M (leave it at 0.5 there).
        structure: "unstructured" (the mask of each block of ``block_size`` columns chosen when the block is
            reached: exactly round(sparsity · rows · block_size) weights of lowest OBS saliency w²/U_jj², U
            the Cholesky factor of the damped H⁻¹) or "N:M" (N of every M consecutive weights of a row kept,
            chosen per M-column group when it is reached; the last group of a row shorter than M keeps round(N
            · length / M)). 2:4 masks are stored as one index of the C(4, 2) = 6 patterns per group, 3 bits
            for 4 weights.
        block_size: columns per block (the paper: 128): the mask selection ("adaptive mask
            selection") and the lazy batch updates work per block; a multiple of M with N:M.
        percdamp: the damping λ added to the Hessian's diagonal, as a fraction of its mean (the paper: 1 %).
        calibration_samples: calibration inputs used (the paper: 128 segments of 2048 tokens of C4).
        batch_size: calibration inputs per forward (memory only).
        blocks: the block rule of the block-by-block pass ("auto" or "layers", as gptq's).
        skip_first / skip_last: leave the first / last conv or linear layer dense
            (default: the last only, as the authors' code: a transformer's blocks, not its lm_head).
        true_sequential: within a block, prune its layers group by group (layers fed the same input:
            q/k/v, then o, then gate/up, then down in a LLaMA block), each group's Hessian taken after
            the earlier groups are pruned (the authors' ``llama.py --true-sequential``, as gptq's; one
            block forward per group). Default false: the paper's order and the flag's default (their
            README's commands do not set it). Records made before this setting existed are the false ones.

    The paper's joint 50 % + 4-bit quantization is out of scope: stack ``quantize`` or ``gptq`` as
    a separate stage.
    """

    sparsity: float = 0.5
    structure: str = "unstructured"
    block_size: int = 128
    percdamp: float = 0.01
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
        check(self.block_size >= 1, f"block_size must be >= 1, got {self.block_size}", "block_size")
        check(
            nm is None or self.block_size % nm[1] == 0,
            f"block_size must be a multiple of M with structure {self.structure}, got {self.block_size}",
            "block_size",
        )
        check(0.0 < self.percdamp < 1.0, f"percdamp must be in (0, 1) (the paper: 0.01), got {self.percdamp}", "percdamp")
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
