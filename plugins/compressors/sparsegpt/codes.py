"""The codes of ``sparsegpt`` (and ``wanda``): prune's :class:`SparseCode` for unstructured masks
(kept values at fp32 and the cheaper of a bitmask and CSR indices, or dense where no bigger), and
:class:`NMCode` for N:M patterns.

NMCode bits: 32 per kept value, plus for each group of M consecutive weights of a row the index of
its pattern among the C(M, N) ways to keep N, at ⌈log2 C(M, N)⌉ bits (2:4: 6 patterns, 3 bits per
4 weights, 0.75 bit a weight, against a bitmask's 1), plus the header ``header_bits(meta())``. A
row's last group shorter than M (length L) keeps round(N·L/M) and its index is among C(L, that).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Mapping
from typing import Any

import torch

import b2s_bench as b2s
from b2s_bench import Code, SizeBreakdown, ceil_log2, pack_bits, unpack_bits

from ..prune.codes import SparseCode, sparse_code

__all__ = ["NMCode", "SparseCode", "pruned_code", "patterns", "tail_keep"]


@functools.lru_cache(maxsize=64)
def patterns(m: int, n: int) -> torch.Tensor:
    """The C(m, n) keep-patterns of a group of m weights keeping n, (C(m, n), m) bool, in
    lexicographic order of the kept positions."""
    table = torch.zeros(math.comb(m, n), m, dtype=torch.bool)
    for i, kept in enumerate(itertools.combinations(range(m), n)):
        table[i, list(kept)] = True
    return table


def tail_keep(n: int, m: int, length: int) -> int:
    """How many weights a row's last group of ``length`` < m weights keeps: round(n·length/m)."""
    return round(n * length / m)


def _matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    rows = shape[0] if len(shape) >= 2 else 1
    return rows, math.prod(shape) // max(rows, 1)


def _indices(mask: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """The pattern index of each group (row-major), from a (rows, cols) keep-mask."""
    table = patterns(m, n).to(torch.int64)
    weights = 2 ** torch.arange(m, dtype=torch.int64)
    lookup = torch.full((2**m,), -1, dtype=torch.int64)
    lookup[(table * weights).sum(1)] = torch.arange(table.shape[0])
    idx = lookup[(mask.to(torch.int64) * weights).sum(-1)]
    if bool((idx < 0).any()):
        raise ValueError(f"a group of the mask does not keep exactly {n} of its {m} weights")
    return idx.reshape(-1)


@dataclasses.dataclass
class NMCode(Code):
    """Kept values (row-major) and the N:M keep-mask, stored as one pattern index per group."""

    values: torch.Tensor  # (kept,) fp32
    mask: torch.Tensor  # bool, the tensor's shape
    n: int
    m: int
    kind = "sparsegpt.nm"

    def __post_init__(self) -> None:
        if not 1 <= self.n < self.m:
            raise ValueError(f"N:M needs 1 <= N < M, got {self.n}:{self.m}")
        self._split()  # validates the pattern
        if int(self.mask.sum()) != self.values.numel():
            raise ValueError(f"{self.values.numel()} values for {int(self.mask.sum())} kept weights")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.mask.shape)

    def _split(self) -> tuple[torch.Tensor, torch.Tensor | None, int, int]:
        """(full-group indices, tail-group indices or None, tail length, tail kept)."""
        rows, cols = _matrix(self.shape)
        mask = self.mask.reshape(rows, cols)
        full = cols // self.m * self.m
        main = _indices(mask[:, :full].reshape(rows, -1, self.m), self.m, self.n)
        length = cols - full
        keep = tail_keep(self.n, self.m, length)
        tail = _indices(mask[:, full:].reshape(rows, 1, length), length, keep) if length and 0 < keep < length else None
        if length and keep in (0, length) and bool((mask[:, full:].sum(1) != keep).any()):
            raise ValueError(f"the last group of each row must keep {keep} of its {length} weights")
        return main, tail, length, keep

    def decode(self) -> torch.Tensor:
        out = torch.zeros(self.mask.shape, dtype=torch.float32)
        out[self.mask] = self.values.float()
        return out

    def _widths(self) -> tuple[int, int]:
        _, _, length, keep = self._split()
        return ceil_log2(math.comb(self.m, self.n)), ceil_log2(math.comb(length, keep)) if length else 0

    def bits(self) -> SizeBreakdown:
        main, tail, _, _ = self._split()
        width, tail_width = self._widths()
        index_bits = main.numel() * width + (tail.numel() * tail_width if tail is not None else 0)
        return SizeBreakdown(payload=32 * self.values.numel(), indices=index_bits, metadata=b2s.header_bits(self.meta()))

    def regularizer(self) -> torch.Tensor:
        return torch.tensor(float(self.values.numel()))  # ||M||_0

    def payload(self) -> dict[str, torch.Tensor]:
        return {"values": self.values}

    def tensors(self) -> dict[str, torch.Tensor]:
        main, tail, _, _ = self._split()
        width, tail_width = self._widths()
        out = {"values": self.values.float().contiguous(), "patterns": pack_bits(main, width)}
        if tail is not None:
            out["tail"] = pack_bits(tail, tail_width)
        return out

    def symbols(self) -> dict[str, b2s.Symbols]:
        main, tail, _, _ = self._split()
        width, tail_width = self._widths()
        out = {"patterns": b2s.Symbols(main, width, "indices")}
        if tail is not None:
            out["tail"] = b2s.Symbols(tail, tail_width, "indices")
        return out

    def meta(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "n": self.n, "m": self.m}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> NMCode:
        shape = tuple(meta["shape"])
        n, m = int(meta["n"]), int(meta["m"])
        rows, cols = _matrix(shape)
        groups = cols // m
        full = groups * m
        width = ceil_log2(math.comb(m, n))
        main = unpack_bits(tensors["patterns"], width, rows * groups)
        mask = torch.zeros(rows, cols, dtype=torch.bool)
        mask[:, :full] = patterns(m, n)[main].reshape(rows, full)
        length = cols - full
        keep = tail_keep(n, m, length)
        if length and keep == length:
            mask[:, full:] = True
        elif length and keep:
            tail = unpack_bits(tensors["tail"], ceil_log2(math.comb(length, keep)), rows)
            mask[:, full:] = patterns(length, keep)[tail]
        return cls(tensors["values"].float(), mask.reshape(shape), n, m)

    def stats(self) -> dict[str, Any]:
        return {"sparsity": 1 - self.values.numel() / max(self.mask.numel(), 1), "index": f"{self.n}:{self.m} patterns"}


def pruned_code(w: torch.Tensor, keep: torch.Tensor, pattern: tuple[int, int] | None) -> Code:
    """``w`` pruned to the keep-mask: an :class:`NMCode` for an N:M pattern, else prune's sparse code."""
    w = w.detach().float().cpu()
    keep = keep.cpu()
    if pattern is None:
        return sparse_code(w, keep)
    return NMCode(w[keep].clone(), keep.clone(), *pattern)
