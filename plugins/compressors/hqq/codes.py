"""The code of ``hqq``: quantize's affine UniformCode whose zero points are floats.

HQQ optimises the zero point over the reals, so it is stored at ``scale_bits`` (fp16 by default, hqq's
compute dtype) beside the scale, not as a b-bit integer. Bits: N·b for the codes (padding included),
(scale_bits + scale_bits) per group, and the header ``b2s.header_bits(meta())``. Only the codes are a
symbol stream (the zero points are floats).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch

import b2s_bench as b2s
from b2s_bench import SizeBreakdown, pack_bits, unpack_bits

from ..quantize.codes import UniformCode

__all__ = ["HQQCode", "group_view"]


def group_view(w: torch.Tensor, group_size: int, axis: int) -> tuple[torch.Tensor, int]:
    """``w`` as (groups, group_size) in hqq's layout, zero-padded; returns (groups, pad).

    axis 1: each row (dim 0 indexes rows, the rest flattened) cut into runs of ``group_size``, the
    row padded to a multiple of it (hqq's ``reshape([-1, group_size])`` when the row divides).
    axis 0: the flattened tensor, padded at its end, read as ``group_size`` rows; each column is a
    group (hqq's ``reshape([group_size, -1])``, reduced over dim 0).
    """
    flat = w.detach().float()
    if axis == 1:
        rows = flat.reshape(flat.shape[0] if flat.dim() >= 2 else 1, -1)
        pad = (-rows.shape[1]) % group_size
        if pad:
            rows = torch.cat([rows, rows.new_zeros(rows.shape[0], pad)], dim=1)
        return rows.reshape(-1, group_size), pad
    line = flat.reshape(-1)
    pad = (-line.numel()) % group_size
    if pad:
        line = torch.cat([line, line.new_zeros(pad)])
    return line.reshape(group_size, -1).t(), pad


@dataclasses.dataclass
class HQQCode(UniformCode):
    """Integer codes q in 0 .. 2^b − 1, per-group scales s and real zero points z: W = s·(q − z)."""

    axis: int = 1
    kind = "hqq.affine"

    def unflatten(self, groups: torch.Tensor) -> torch.Tensor:
        if self.axis == 1:
            return super().unflatten(groups)
        line = groups.t().reshape(-1)
        return line[: math.prod(self.orig_shape)].reshape(self.orig_shape)

    def _float(self) -> torch.dtype:
        return torch.float16 if self.scale_bits == 16 else torch.float32

    def bits(self) -> SizeBreakdown:
        groups = self.scale.numel()
        return SizeBreakdown(
            payload=self.q.numel() * self.nbits,
            scales=2 * groups * self.scale_bits,
            metadata=b2s.header_bits(self.meta()),
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "q": pack_bits(self.q.to(torch.int64), self.nbits),
            "scale": self.scale.to(self._float()),
            "zero": self.zero.to(self._float()),
        }

    def symbols(self) -> dict[str, b2s.Symbols]:
        """The integer codes (the zero points are floats, no symbol stream)."""
        return {"q": b2s.Symbols(self.q.to(torch.int64).reshape(-1), self.nbits, "payload")}

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "axis": self.axis}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> HQQCode:
        q_shape = tuple(meta["q_shape"])
        q = unpack_bits(tensors["q"], meta["nbits"], math.prod(q_shape)).float().reshape(q_shape)
        return cls(
            q,
            tensors["scale"].float(),
            tensors["zero"].float(),
            meta["nbits"],
            False,
            meta["scale_bits"],
            meta["pad"],
            tuple(meta["shape"]),
            meta["axis"],
        )
