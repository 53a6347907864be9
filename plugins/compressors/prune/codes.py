"""The code of ``prune``: kept values and their positions (W = M ⊙ V), and its gating network.

Bits: the kept values at 32 bits, plus their positions as the cheaper of a bitmask (N bits) and
CSR-style indices (nnz·⌈log2 cols⌉ + (rows+1)·⌈log2(nnz+1)⌉), plus a 32-bit header per tensor.
Where that costs at least the dense tensor (low sparsity), the tensor is stored dense, zeros
included, and its positions cost nothing (:func:`sparse_code`).
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


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    rows = shape[0] if len(shape) >= 2 else 1
    return rows, math.prod(shape) // max(rows, 1)


@dataclasses.dataclass
class SparseCode(Code):
    """Kept values (row-major order) and their positions.

    A dense-stored tensor (see :func:`sparse_code`) has an all-true mask and its pruned zeros among
    the values; its pruning mask is then ``values != 0``.
    """

    values: torch.Tensor  # (nnz,) fp32
    mask: torch.Tensor  # bool, the tensor's shape
    kind = "prune.sparse"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.mask.shape)

    @property
    def encoding(self) -> str:
        rows, cols = _matrix_shape(self.shape)
        return sparse_index_bits(int(self.values.numel()), rows, cols)[1]

    def decode(self) -> torch.Tensor:
        out = torch.zeros(self.mask.shape, dtype=torch.float32)
        out[self.mask] = self.values.float()
        return out

    def bits(self) -> SizeBreakdown:
        rows, cols = _matrix_shape(self.shape)
        index_bits, _ = sparse_index_bits(int(self.values.numel()), rows, cols)
        return SizeBreakdown(payload=32 * self.values.numel(), indices=index_bits, metadata=b2s.header_bits(self.meta()))

    @property
    def kept(self) -> int:
        """The number of weights the pruning kept (||M||₀)."""
        return int(self.values.count_nonzero()) if self.encoding == "dense" else int(self.values.numel())

    def regularizer(self) -> torch.Tensor:
        return torch.tensor(float(self.kept))  # ||M||_0

    def payload(self) -> dict[str, torch.Tensor]:
        return {"values": self.values}

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"values": self.values.float().contiguous()}
        rows, cols = _matrix_shape(self.shape)
        if self.encoding == "bitmask":
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
        bitmask (``pack_mask(m)`` is ``pack_bits(m, 1)``: one bit an entry, row-major) or the CSR column
        indices. Not declared: the CSR row pointers (a non-decreasing sequence of mostly distinct
        values, which an order-0 entropy coder cannot shorten) and a dense tensor's values (fp32)."""
        rows, cols = _matrix_shape(self.shape)
        if self.encoding == "bitmask":
            return {"mask": b2s.Symbols(self.mask.reshape(-1).to(torch.int64), 1, "indices")}
        if self.encoding == "csr" and ceil_log2(cols) >= 1 and self.values.numel():
            col_idx = self.mask.reshape(rows, cols).nonzero()[:, 1].to(torch.int64)
            return {"cols": b2s.Symbols(col_idx, ceil_log2(cols), "indices")}
        return {}

    def meta(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "nnz": int(self.values.numel())}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> SparseCode:
        shape = tuple(meta["shape"])
        nnz = meta["nnz"]
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
        return {"sparsity": 1 - self.kept / max(self.mask.numel(), 1), "index": self.encoding}


def sparse_code(w: torch.Tensor, mask: torch.Tensor) -> SparseCode:
    """``w`` pruned to ``mask``, stored sparse, or dense (zeros included) where that is no bigger."""
    rows, cols = _matrix_shape(tuple(w.shape))
    nnz = int(mask.sum())
    if 32 * nnz + sparse_index_bits(nnz, rows, cols)[0] >= 32 * w.numel():
        return SparseCode((w * mask).float().reshape(-1).clone(), torch.ones_like(mask))
    return SparseCode(w[mask].float().clone(), mask)


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
