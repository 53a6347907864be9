"""The codes of ``hypercompress``: lattice indices (released), winding indices (canonical), or fp32.

Bits: released, ⌈N/2⌉·⌈log2((n+1)(classes+1))⌉ for the indices plus 4×32 (centroid and farthest
pair, stored in tensors: counted under ``scales``) and a 32-bit header (class count, n, padding) per
layer; canonical, ⌈N/k⌉·⌈log2 N_c⌉ plus 2×32 (min, max; ``scales``) and a 32-bit header.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch

import b2s_bench as b2s
from b2s_bench import Code, SizeBreakdown, StoredTensorCode, ceil_log2, pack_bits, unpack_bits

from .codebook import lattice_decode, trajectory

__all__ = ["FLOAT_BITS", "LatticeCode", "WindingCode", "RawCode"]

FLOAT_BITS = 32


def _shape_numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


@dataclasses.dataclass
class LatticeCode(Code):
    """Released variant: pair indices ``class·(n+1) + codeword``, the centroid and the farthest pair.

    R(φ) is the indicator of the integer constraint: the number of indices outside
    0..(n+1)(classes+1)−1, which is 0 for every code this compressor writes. No network form
    (``as_network`` is None): the decoder is a lookup of integer indices, with nothing to descend on.
    """

    idx: torch.Tensor  # (pairs,) int64
    n: int
    rect_l: float
    classes: int
    center: torch.Tensor  # (2,) fp32
    farthest: torch.Tensor  # (2,) fp32
    pad: int
    orig_shape: tuple[int, ...]
    kind = "hypercompress.lattice"

    @property
    def nbits(self) -> int:
        return max(1, ceil_log2((self.n + 1) * (self.classes + 1)))

    def decode(self) -> torch.Tensor:
        pairs = lattice_decode(self.idx, self.n, self.rect_l, self.classes, self.center, self.farthest)
        flat = pairs.reshape(-1)[: _shape_numel(self.shape)]
        return flat.float().reshape(self.shape)

    def bits(self) -> SizeBreakdown:
        return SizeBreakdown(indices=self.idx.numel() * self.nbits, scales=4 * FLOAT_BITS, metadata=b2s.header_bits(self.meta()))

    def symbols(self) -> dict[str, b2s.Symbols]:
        """The indices at their fixed width (counted under ``indices``), for an entropy-coding stage."""
        return {"idx": b2s.Symbols(self.idx.to(torch.int64).reshape(-1), self.nbits, "indices")}

    def regularizer(self) -> torch.Tensor:
        return ((self.idx < 0) | (self.idx >= (self.n + 1) * (self.classes + 1))).sum().float()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "idx": pack_bits(self.idx, self.nbits),
            "center": self.center.float().contiguous(),
            "farthest": self.farthest.float().contiguous(),
        }

    def meta(self) -> dict[str, Any]:
        return {
            "shape": list(self.orig_shape),
            "n": self.n,
            "rect_l": self.rect_l,
            "classes": self.classes,
            "pad": self.pad,
            "pairs": int(self.idx.numel()),
        }

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> LatticeCode:
        nbits = max(1, ceil_log2((meta["n"] + 1) * (meta["classes"] + 1)))
        idx = unpack_bits(tensors["idx"], nbits, meta["pairs"])
        return cls(
            idx,
            meta["n"],
            float(meta["rect_l"]),
            meta["classes"],
            tensors["center"].float(),
            tensors["farthest"].float(),
            meta["pad"],
            tuple(meta["shape"]),
        )

    def stats(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "n": self.n,
            "index_bits": self.nbits,
            "bits_per_weight": self.bits().total / max(_shape_numel(self.shape), 1),
        }


@dataclasses.dataclass
class WindingCode(Code):
    """Canonical variant: one trajectory index n < N_c per group of k weights, and the tensor's range.

    R(φ) is the indicator of the constraint n ∈ {0, …, N_c − 1} (the count of violations, 0 here).
    No network form (``as_network`` is None): h(θ) = θ·a mod 1 is periodic, so a gradient fit of a real
    θ only slides along the winding into the nearest local minimum; the exact search is the projection.
    """

    idx: torch.Tensor  # (groups,) int64
    k: int
    n_c: int
    delta: float
    lo: float  # fp32 values
    hi: float
    pad: int
    orig_shape: tuple[int, ...]
    kind = "hypercompress.winding"

    @property
    def nbits(self) -> int:
        return max(1, ceil_log2(self.n_c))

    def decode(self) -> torch.Tensor:
        x = trajectory(self.idx, self.k, self.delta).reshape(-1)[: _shape_numel(self.shape)]
        return (self.lo + x * (self.hi - self.lo)).float().reshape(self.shape)

    def bits(self) -> SizeBreakdown:
        return SizeBreakdown(indices=self.idx.numel() * self.nbits, scales=2 * FLOAT_BITS, metadata=b2s.header_bits(self.meta()))

    def symbols(self) -> dict[str, b2s.Symbols]:
        """The indices at their fixed width (counted under ``indices``), for an entropy-coding stage."""
        return {"idx": b2s.Symbols(self.idx.to(torch.int64).reshape(-1), self.nbits, "indices")}

    def regularizer(self) -> torch.Tensor:
        return ((self.idx < 0) | (self.idx >= self.n_c)).sum().float()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"idx": pack_bits(self.idx, self.nbits), "range": torch.tensor([self.lo, self.hi], dtype=torch.float32)}

    def meta(self) -> dict[str, Any]:
        return {
            "shape": list(self.orig_shape),
            "k": self.k,
            "n_c": self.n_c,
            "delta": self.delta,
            "pad": self.pad,
            "groups": int(self.idx.numel()),
        }

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> WindingCode:
        idx = unpack_bits(tensors["idx"], max(1, ceil_log2(meta["n_c"])), meta["groups"])
        lo, hi = (float(v) for v in tensors["range"].float())
        return cls(idx, meta["k"], meta["n_c"], float(meta["delta"]), lo, hi, meta["pad"], tuple(meta["shape"]))

    def stats(self) -> dict[str, Any]:
        return {"k": self.k, "n_c": self.n_c, "bits_per_weight": self.bits().total / max(_shape_numel(self.shape), 1)}


class RawCode(StoredTensorCode):
    """A tensor kept in fp32 (only from ``compress_tensor``: tiny tensors and the loss-limit fallback)."""

    kind = "hypercompress.raw"
