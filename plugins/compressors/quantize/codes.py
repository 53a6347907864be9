"""The codes of ``quantize``: integer codes on a uniform grid, or a tensor stored as fp16/fp32.

Bits: N·b for the codes, plus a scale (``scale_bits``) per group and, when affine, a b-bit zero
point per group (the padding of the last group is stored and counted like any code), plus the
header ``b2s.header_bits(meta())``. 16 and 32 bits store the tensor as fp16/fp32 with no header (the
stored tensor has the shape).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import Code, SizeBreakdown, StoredTensorCode, pack_bits, unpack_bits

__all__ = ["grid_range", "UniformCode", "AdaRoundCode", "FloatCode", "RoundingNetwork", "AdaRoundNetwork"]


def grid_range(nbits: int, symmetric: bool) -> tuple[int, int]:
    """The smallest and largest integer code of a b-bit grid (signed when symmetric)."""
    return (-(2 ** (nbits - 1)), 2 ** (nbits - 1) - 1) if symmetric else (0, 2**nbits - 1)


@dataclasses.dataclass
class UniformCode(Code):
    """Integer codes q, per-group scales s and zero points z: W = s·(q − z)."""

    q: torch.Tensor  # (groups, group_len) integer-valued
    scale: torch.Tensor  # (groups,)
    zero: torch.Tensor  # (groups,) integer-valued (zeros when symmetric)
    nbits: int
    symmetric: bool
    scale_bits: int
    pad: int
    orig_shape: tuple[int, ...]
    kind = "quantize.uniform"

    def unflatten(self, groups: torch.Tensor) -> torch.Tensor:
        """(groups, group_len) -> the tensor's shape, dropping the padding."""
        rows = self.orig_shape[0] if len(self.orig_shape) >= 2 and groups.shape[0] != 1 else 1
        flat = groups.reshape(rows, -1)
        if self.pad:
            flat = flat[:, : flat.shape[1] - self.pad]
        return flat.reshape(self.orig_shape)

    def decode(self) -> torch.Tensor:
        return self.unflatten(self.scale.float()[:, None] * (self.q.float() - self.zero.float()[:, None]))

    def bits(self) -> SizeBreakdown:
        groups = self.scale.numel()
        return SizeBreakdown(
            payload=self.q.numel() * self.nbits,
            scales=groups * self.scale_bits + (0 if self.symmetric else groups * self.nbits),
            metadata=b2s.header_bits(self.meta()),
        )

    def regularizer(self) -> torch.Tensor:
        # the indicator of the grid: zero, since every stored code is a grid point
        return (self.q - torch.round(self.q)).abs().sum().float()

    def tensors(self) -> dict[str, torch.Tensor]:
        offset = 2 ** (self.nbits - 1) if self.symmetric else 0
        out = {
            "q": pack_bits(self.q.to(torch.int64) + offset, self.nbits),
            "scale": self.scale.to(torch.float16 if self.scale_bits == 16 else torch.float32),
        }
        if not self.symmetric:
            out["zero"] = pack_bits(self.zero.to(torch.int64), self.nbits)
        return out

    def symbols(self) -> dict[str, b2s.Symbols]:
        """The integer codes, as stored (offset to unsigned), and, when affine, the zero points (b-bit
        integers counted under ``scales``): what an entropy-coding stage may code. AdaRound codes are
        UniformCodes and declare the same streams."""
        offset = 2 ** (self.nbits - 1) if self.symmetric else 0
        out = {"q": b2s.Symbols((self.q.to(torch.int64) + offset).reshape(-1), self.nbits, "payload")}
        if not self.symmetric:
            out["zero"] = b2s.Symbols(self.zero.to(torch.int64).reshape(-1), self.nbits, "scales")
        return out

    def meta(self) -> dict[str, Any]:
        return {
            "nbits": self.nbits,
            "symmetric": self.symmetric,
            "scale_bits": self.scale_bits,
            "pad": self.pad,
            "shape": list(self.orig_shape),
            "q_shape": list(self.q.shape),
        }

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> UniformCode:
        q_shape = tuple(meta["q_shape"])
        n = math.prod(q_shape)
        offset = 2 ** (meta["nbits"] - 1) if meta["symmetric"] else 0
        q = (unpack_bits(tensors["q"], meta["nbits"], n) - offset).float().reshape(q_shape)
        scale = tensors["scale"].float()
        zero = (
            unpack_bits(tensors["zero"], meta["nbits"], scale.numel()).float() if "zero" in tensors else torch.zeros_like(scale)
        )
        return cls(q, scale, zero, meta["nbits"], meta["symmetric"], meta["scale_bits"], meta["pad"], tuple(meta["shape"]))

    def as_network(self, init: str = "code", generator: torch.Generator | None = None) -> RoundingNetwork:
        return RoundingNetwork(self, init, generator)

    def stats(self) -> dict[str, Any]:
        return {"bits": self.nbits, "groups": self.scale.numel()}


class AdaRoundCode(UniformCode):
    """A :class:`UniformCode` whose rounding AdaRound learned (and kept: it beat round-to-nearest).

    It is stored and restored as a UniformCode (same kind, same bytes: the grid is the same); the
    class only tells the solver check, through its network's ``solution``, that these codes come
    from a local search on the layer's outputs, not from the closed form of the weight error.
    """

    def as_network(self, init: str = "code", generator: torch.Generator | None = None) -> AdaRoundNetwork:
        return AdaRoundNetwork(self, init, generator)


class RoundingNetwork(b2s.DecoderNetwork):
    """The rounding layer relaxed: g(V) = V, with R(V) = mean squared distance of V to the grid.

    s and z stay fixed. Fitted to W with R's weight ramped up, V is pulled onto the grid point
    nearest to W, and ``project()`` snaps it there: round-to-nearest, reached by gradient descent.
    """

    projection = "end"
    solver_lam = 1.0

    def __init__(self, code: UniformCode, init: str, generator: torch.Generator | None):
        super().__init__()
        self.code = code
        start = code.scale[:, None] * (code.q - code.zero[:, None])  # V lives in the grouped layout
        if init == "random":
            start = torch.randn(start.shape, generator=generator) * start.std().clamp(min=1e-3)
        self.v = nn.Parameter(start.clone().float())

    def _snapped(self) -> torch.Tensor:
        c = self.code
        qmin, qmax = grid_range(c.nbits, c.symmetric)
        q = torch.clamp(torch.round(self.v / c.scale[:, None]) + c.zero[:, None], qmin, qmax)
        return c.scale[:, None] * (q - c.zero[:, None])

    def forward(self) -> torch.Tensor:
        return self.code.unflatten(self.v)

    def regularizer(self) -> torch.Tensor:
        return (self.v - self._snapped().detach()).pow(2).mean()  # in weight units, like the data term

    @torch.no_grad()
    def project(self) -> None:
        self.v.copy_(self._snapped())


class AdaRoundNetwork(RoundingNetwork):
    """The rounding layer of an AdaRound code: the same network, but the code is a local search's."""

    solution = "local search"


class FloatCode(StoredTensorCode):
    """A tensor stored as fp16 or fp32 (the 16- and 32-bit settings): its header is empty (meta() is {}).

    It declares no symbol stream: it stores a float tensor, not ``pack_bits`` of integers, so the
    protocol (``tensors()[name] == pack_bits(values, width)``) does not fit it.
    """

    kind = "quantize.float"
    stored_part = "payload"
