"""The code of ``prune``: kept values and their positions (W = M ⊙ V), and its gating network.

Bits: the kept values at 32 bits, plus their positions as the cheaper of a bitmask (N bits) and
CSR-style indices (nnz·⌈log2 cols⌉ + (rows+1)·⌈log2(nnz+1)⌉), plus a 32-bit header per tensor.
Where that costs at least the dense tensor (low sparsity), the tensor is stored dense, zeros
included, and its positions cost nothing (:func:`sparse_code`).

Relative positions (``positions: relative``, Deep Compression, Han et al. 2016, Section 2): the
kept weights' positions in the flattened row-major tensor as differences from the previous one
(the first from position -1), stored at ``b = index_bits`` bits with ``pack_bits``. A difference
``d`` in 1..2^b - 1 is stored as ``d - 1``; where the gap to the next kept weight is larger, a
*filler zero* is stored: a value 0 at the largest reachable position (previous + 2^b - 1, a
genuinely pruned weight, since the gap is larger), coded by the largest symbol 2^b - 1, and the
next difference starts from there. Each filler costs a value (among the ``values``: the payload a
later stage shares or quantizes) and an index. The choice, where the paper is silent: reserving
the largest symbol for fillers (a reach of 2^b - 1 positions a symbol, the paper's 3-bit example
reaches 8) tells the decoder which stored values are fillers, so ``decode()`` writes only the kept
weights' values and a filler's position stays 0 even when a later stage (k-means sharing, uniform
quantization) maps the filler's stored 0 to a nonzero value. Bits: ``32·E`` values and ``b·E``
indices for the E = kept + filler entries, plus the header. The differences are a declared symbol
stream, so the ``entropy`` stage Huffman-codes them as the paper does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import (
    Code,
    SizeBreakdown,
    ceil_log2,
    pack_bits,
    pack_mask,
    sparse_index_bits,
    unpack_bits,
    unpack_mask,
)

__all__ = ["SparseCode", "MaskNetwork", "sparse_code"]


#: the ``encoding`` a relatively indexed code names in its meta()
RELATIVE = "relative"


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    rows = shape[0] if len(shape) >= 2 else 1
    return rows, math.prod(shape) // max(rows, 1)


def relative_indices(mask: torch.Tensor, index_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The relative indices of a keep-mask: (symbols, kept), both over the E stored entries in order.

    ``symbols[j]`` is the stored ``index_bits``-bit code of entry j (difference − 1 for a kept weight,
    2^b − 1 for a filler zero); ``kept[j]`` is False for fillers. See the module docstring.
    """
    reach = (1 << index_bits) - 1  # the largest difference a symbol holds; the symbol `reach` marks a filler
    pos = mask.reshape(-1).nonzero().reshape(-1)
    prev = torch.cat([torch.full((1,), -1, dtype=torch.int64), pos[:-1]])
    gaps = pos - prev  # >= 1
    fillers = (gaps - 1) // reach  # how many fillers precede each kept weight
    ends = (fillers + 1).cumsum(0) - 1  # the entry of each kept weight
    entries = int(ends[-1]) + 1 if pos.numel() else 0
    symbols = torch.full((entries,), reach, dtype=torch.int64)
    symbols[ends] = gaps - fillers * reach - 1
    kept = torch.zeros(entries, dtype=torch.bool)
    kept[ends] = True
    return symbols, kept


def relative_positions(symbols: torch.Tensor, index_bits: int, numel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`relative_indices`: (positions of the stored entries, kept flags)."""
    reach = (1 << index_bits) - 1
    filler = symbols == reach
    positions = torch.where(filler, reach, symbols + 1).cumsum(0) - 1
    if positions.numel() and int(positions[-1]) >= numel:
        raise ValueError(
            f"relative indices reach position {int(positions[-1])} of a {numel}-element tensor: the artifact is damaged"
        )
    return positions, ~filler


@dataclasses.dataclass
class SparseCode(Code):
    """Kept values (row-major order) and their positions.

    A dense-stored tensor (see :func:`sparse_code`) has an all-true mask and its pruned zeros among
    the values; its pruning mask is then ``values != 0``. With ``positions="relative"`` the values
    are those of the stored entries, filler zeros included (``values.numel()`` = kept + fillers),
    and ``mask`` is the kept weights' mask (fillers' positions are pruned: False).
    """

    values: torch.Tensor  # (nnz,) fp32; relative: (kept + fillers,)
    mask: torch.Tensor  # bool, the tensor's shape
    positions: str = "auto"  # "auto" (bitmask, CSR or dense by size) or "relative"
    index_bits: int = 5  # bits per relative index (relative only)
    kind = "prune.sparse"

    def __post_init__(self) -> None:
        if self.positions not in ("auto", RELATIVE):
            raise ValueError(f"positions must be 'auto' or 'relative', got {self.positions!r}")
        if self.positions == RELATIVE:
            if not 1 <= self.index_bits <= 16:
                raise ValueError(f"index_bits must be in 1..16, got {self.index_bits}")
            entries = int(self._relative()[0].numel())
            if self.values.numel() != entries:
                raise ValueError(
                    f"relative positions store {entries} values (kept weights and filler zeros), got {self.values.numel()}"
                )

    def _relative(self) -> tuple[torch.Tensor, torch.Tensor]:
        return relative_indices(self.mask, self.index_bits)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.mask.shape)

    @property
    def encoding(self) -> str:
        if self.positions == RELATIVE:
            return RELATIVE
        rows, cols = _matrix_shape(self.shape)
        return sparse_index_bits(int(self.values.numel()), rows, cols)[1]

    def decode(self) -> torch.Tensor:
        """The dense tensor: each kept weight's value at its position, zeros elsewhere. Relative: a
        filler's stored value (0, or whatever a later stage made of it) is not written: its position
        is a pruned weight and stays 0."""
        out = torch.zeros(self.mask.shape, dtype=torch.float32)
        values = self.values.float()
        out[self.mask] = values[self._relative()[1]] if self.positions == RELATIVE else values
        return out

    def bits(self) -> SizeBreakdown:
        if self.positions == RELATIVE:
            index_bits = self.index_bits * int(self.values.numel())
        else:
            rows, cols = _matrix_shape(self.shape)
            index_bits, _ = sparse_index_bits(int(self.values.numel()), rows, cols)
        return SizeBreakdown(payload=32 * self.values.numel(), indices=index_bits, metadata=b2s.header_bits(self.meta()))

    @property
    def kept(self) -> int:
        """The number of weights the pruning kept (||M||₀)."""
        if self.positions == RELATIVE:
            return int(self.mask.sum())
        return int(self.values.count_nonzero()) if self.encoding == "dense" else int(self.values.numel())

    def regularizer(self) -> torch.Tensor:
        return torch.tensor(float(self.kept))  # ||M||_0

    def payload(self) -> dict[str, torch.Tensor]:
        return {"values": self.values}

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"values": self.values.float().contiguous()}
        rows, cols = _matrix_shape(self.shape)
        if self.encoding == RELATIVE:
            if self.values.numel():  # nothing kept: no entries, no indices (the count in meta() says so)
                out["diffs"] = pack_bits(self._relative()[0], self.index_bits)
        elif self.encoding == "bitmask":
            out["mask"] = pack_mask(self.mask)
        elif self.encoding == "csr" and self.values.numel():
            # what sparse_index_bits counts, and nothing more: no positions at all when nothing is kept (the
            # count in meta() says so), and no column indices for a one-column matrix (they are all 0)
            m = self.mask.reshape(rows, cols)
            col_idx = m.nonzero()[:, 1]
            row_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), m.sum(dim=1).cumsum(0)])
            if ceil_log2(cols) >= 1:
                out["cols"] = pack_bits(col_idx, ceil_log2(cols))
            out["row_ptr"] = pack_bits(row_ptr, max(ceil_log2(int(self.values.numel()) + 1), 1))
        return out

    def symbols(self) -> dict[str, b2s.Symbols]:
        """The positions, where they are integers at a fixed width (counted under ``indices``): the
        bitmask (``pack_mask(m)`` is ``pack_bits(m, 1)``: one bit an entry, row-major), the CSR column
        indices, or the relative indices (``index_bits`` wide, fillers' codes included: Deep
        Compression Huffman-codes them). Not declared: the CSR row pointers (a non-decreasing sequence
        of mostly distinct values, which an order-0 entropy coder cannot shorten) and a dense tensor's
        values (fp32)."""
        rows, cols = _matrix_shape(self.shape)
        if self.encoding == RELATIVE:
            return {"diffs": b2s.Symbols(self._relative()[0], self.index_bits, "indices")} if self.values.numel() else {}
        if self.encoding == "bitmask":
            return {"mask": b2s.Symbols(self.mask.reshape(-1).to(torch.int64), 1, "indices")}
        if self.encoding == "csr" and ceil_log2(cols) >= 1 and self.values.numel():
            col_idx = self.mask.reshape(rows, cols).nonzero()[:, 1].to(torch.int64)
            return {"cols": b2s.Symbols(col_idx, ceil_log2(cols), "indices")}
        return {}

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"shape": list(self.shape), "nnz": int(self.values.numel())}
        if self.positions == RELATIVE:  # the auto encodings' header is unchanged (their artifacts, their bits)
            meta.update(encoding=RELATIVE, index_bits=self.index_bits)
        return meta

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> SparseCode:
        shape = tuple(meta["shape"])
        nnz = meta["nnz"]
        if meta.get("encoding") == RELATIVE:
            width = int(meta["index_bits"])
            symbols = unpack_bits(tensors["diffs"], width, nnz) if nnz else torch.zeros(0, dtype=torch.int64)
            positions, kept = relative_positions(symbols, width, math.prod(shape))
            mask = torch.zeros(math.prod(shape), dtype=torch.bool)
            mask[positions[kept]] = True
            return cls(tensors["values"].float(), mask.reshape(shape), RELATIVE, width)
        if "mask" in tensors:
            mask = unpack_mask(tensors["mask"], shape)
        elif nnz == math.prod(shape):
            mask = torch.ones(shape, dtype=torch.bool)
        elif nnz == 0:
            mask = torch.zeros(shape, dtype=torch.bool)
        else:
            rows, cols = _matrix_shape(shape)
            if "cols" in tensors:  # artifacts written before one-column matrices stored none hold 1-bit zeros
                col_idx = unpack_bits(tensors["cols"], max(ceil_log2(cols), 1), nnz)
            else:
                col_idx = torch.zeros(nnz, dtype=torch.int64)
            row_ptr = unpack_bits(tensors["row_ptr"], max(ceil_log2(nnz + 1), 1), rows + 1)
            row_idx = torch.repeat_interleave(torch.arange(rows), row_ptr[1:] - row_ptr[:-1])
            mask = torch.zeros(rows, cols, dtype=torch.bool)
            mask[row_idx, col_idx] = True
            mask = mask.reshape(shape)
        return cls(tensors["values"].float(), mask)

    def as_network(self, init: str = "code", generator: torch.Generator | None = None) -> MaskNetwork:
        start = self.decode() if init == "code" else torch.randn(self.shape, generator=generator) * 0.1
        return MaskNetwork(start, self.kept)

    def stats(self) -> dict[str, Any]:
        out = {"sparsity": 1 - self.kept / max(self.mask.numel(), 1), "index": self.encoding}
        if self.positions == RELATIVE:
            out.update(index_bits=self.index_bits, fillers=int(self.values.numel()) - self.kept)
        return out


def sparse_code(w: torch.Tensor, mask: torch.Tensor, positions: str = "auto", index_bits: int = 5) -> SparseCode:
    """``w`` pruned to ``mask``, stored sparse, or dense (zeros included) where that is no bigger.

    ``positions="relative"`` stores the positions as ``index_bits``-bit relative indices with filler
    zeros (see the module docstring) instead of the cheaper of a bitmask and CSR; dense still wins
    where the values and indices would cost at least the fp32 tensor (a full mask, for one).
    """
    rows, cols = _matrix_shape(tuple(w.shape))
    nnz = int(mask.sum())
    if positions == RELATIVE:
        symbols, kept = relative_indices(mask, index_bits)
        entries = int(symbols.numel())
        if (32 + index_bits) * entries < 32 * w.numel():
            values = torch.zeros(entries, dtype=torch.float32)
            values[kept] = w[mask].float()
            return SparseCode(values, mask.clone(), RELATIVE, index_bits)
    elif 32 * nnz + sparse_index_bits(nnz, rows, cols)[0] < 32 * w.numel():
        return SparseCode(w[mask].float().clone(), mask)
    return SparseCode((w * mask).float().reshape(-1).clone(), torch.ones_like(mask))


class MaskNetwork(b2s.DecoderNetwork):
    """W = M ⊙ V with ||M||₀ ≤ k: V is fitted relaxed (R = the L1 norm, its convex relaxation),
    then projected onto the constraint (keep the k largest |V|), which gives the magnitude mask.

    Projecting after every step (iterative hard thresholding) also works with plain gradient
    steps, but interacts badly with Adam's per-entry step sizes, so the solver projects at the end.
    """

    projection = "end"

    def __init__(self, start: torch.Tensor, k: int):
        super().__init__()
        self.v = nn.Parameter(start.clone().float())
        self.k = k
        self.project()

    def forward(self) -> torch.Tensor:
        return self.v

    def regularizer(self) -> torch.Tensor:
        return self.v.abs().mean()  # the L1 relaxation of ||M||_0

    @torch.no_grad()
    def project(self) -> None:
        flat = self.v.view(-1)
        if self.k < flat.numel():
            drop = torch.topk(flat.abs(), flat.numel() - self.k, largest=False).indices
            flat[drop] = 0.0

    def mask(self) -> torch.Tensor:
        return self.v != 0
