"""The code of ``ecsq``: integer indices of a uniform mid-tread quantizer, stored at a fixed width.

W = Δ·q. Stored: the indices offset to unsigned (q + offset in [0, 2^width), width the smallest that
holds their span) packed with ``b2s.pack_bits`` and declared as the symbol stream ``q`` (an
entropy-coding stage after ``ecsq`` stores them in about H(q) bits each, plus its model), and Δ as
fp32. Bits: N·width (``payload``), 32 (Δ, ``scales``) and the header ``b2s.header_bits(meta())``
(shape, width, offset: 32 bits a field): an honest fixed-width code on its own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch

import b2s_bench as b2s
from b2s_bench import Code, SizeBreakdown, pack_bits, unpack_bits

from .quantizer import index_range, rate_of

__all__ = ["ECSQCode"]


@dataclasses.dataclass
class ECSQCode(Code):
    """Indices q (int64, the tensor's shape) and the step Δ (an fp32 value): W = Δ·q.

    R(φ) is the rate term of the ECSQ Lagrangian: the bits an ideal order-0 entropy coder needs for
    the indices, N·H(q) (the model aside). No network form: the indices are integers found by a step
    search (and RDO rounding), with nothing to descend on.
    """

    q: torch.Tensor
    step: float
    orig_shape: tuple[int, ...]
    kind = "ecsq.uniform"

    def __post_init__(self) -> None:
        self.step = float(torch.tensor(self.step, dtype=torch.float32))  # what tensors() stores
        self.q = self.q.to(torch.int64).reshape(self.orig_shape)

    @property
    def offset(self) -> int:
        return index_range(self.q)[0]

    @property
    def width(self) -> int:
        return index_range(self.q)[1]

    def decode(self) -> torch.Tensor:
        return (self.q.double() * self.step).float()  # fp64 product: exact for |q| up to 2^30

    def bits(self) -> SizeBreakdown:
        return SizeBreakdown(payload=self.q.numel() * self.width, scales=32, metadata=b2s.header_bits(self.meta()))

    def regularizer(self) -> torch.Tensor:
        entropy, _ = rate_of(self.q, 1)
        return torch.tensor(entropy * self.q.numel())

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "q": pack_bits(self.q.reshape(-1) + self.offset, self.width),
            "step": torch.tensor([self.step], dtype=torch.float32),
        }

    def symbols(self) -> dict[str, b2s.Symbols]:
        """The indices as stored (offset to unsigned): what an entropy-coding stage codes."""
        return {"q": b2s.Symbols(self.q.reshape(-1) + self.offset, self.width, "payload")}

    def meta(self) -> dict[str, Any]:
        offset, width = index_range(self.q)
        return {"shape": list(self.orig_shape), "width": width, "offset": offset}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> ECSQCode:
        shape = tuple(int(s) for s in meta["shape"])
        q = unpack_bits(tensors["q"], int(meta["width"]), math.prod(shape)) - int(meta["offset"])
        return cls(q.reshape(shape), float(tensors["step"].float()[0]), shape)

    def stats(self) -> dict[str, Any]:
        entropy, _ = rate_of(self.q, 1)
        return {"step": self.step, "width": self.width, "entropy": entropy, "levels": int(self.q.unique().numel())}
