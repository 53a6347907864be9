"""Ternary Weight Networks (Li & Liu, 2016) as a b2s-bench plugin.

Per output channel: Δ = t·mean|W| (t = 0.7 in the paper), α = mean of |W| where |W| > Δ, and
Ŵ = α·sign(W)·[|W| > Δ]. Stored: 2 bits per weight (codes −1, 0, +1) and α in fp32 per channel.
Theory form: a rounding layer onto the 3-level grid {−α, 0, α}; R(φ) is that grid's indicator.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import pack_bits, unpack_bits, weight_layers


@dataclasses.dataclass
class TernaryCode(b2s.Code):
    codes: torch.Tensor  # int8 in {-1, 0, 1}, the tensor's shape
    alpha: torch.Tensor  # (out_channels,)
    kind = "ternary.twn"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    def decode(self) -> torch.Tensor:
        view = (-1,) + (1,) * (self.codes.dim() - 1)
        return self.codes.float() * self.alpha.view(view)

    def bits(self) -> b2s.SizeBreakdown:
        return b2s.SizeBreakdown(payload=2 * self.codes.numel(), scales=32 * self.alpha.numel())

    def regularizer(self) -> torch.Tensor:
        return torch.zeros(())  # every stored weight is on the ternary grid

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"codes": pack_bits(self.codes.to(torch.int64) + 1, 2), "alpha": self.alpha.float()}

    def meta(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> TernaryCode:
        shape = tuple(meta["shape"])
        codes = (unpack_bits(tensors["codes"], 2, math.prod(shape)) - 1).to(torch.int8).reshape(shape)
        return cls(codes, tensors["alpha"].float())


@dataclasses.dataclass(frozen=True)
class TernaryConfig:
    """threshold: Δ as a multiple of mean|W| per channel (0.7 in the paper)."""

    threshold: float = 0.7

    def __post_init__(self) -> None:
        b2s.check(0 < self.threshold < 2, f"threshold must be in (0, 2), got {self.threshold}", "threshold")


def ternarize(w: torch.Tensor, threshold: float) -> TernaryCode:
    rows = w.detach().float().reshape(w.shape[0], -1)
    delta = threshold * rows.abs().mean(dim=1, keepdim=True)
    keep = rows.abs() > delta
    alpha = (rows.abs() * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
    codes = (torch.sign(rows) * keep).to(torch.int8).reshape(w.shape)
    return TernaryCode(codes, alpha)


def compress(model: nn.Module, config: TernaryConfig, ctx: b2s.Context) -> b2s.Compressed:
    state = model.state_dict()
    return b2s.Compressed.from_codes(model, {k: ternarize(state[k], config.threshold) for k in weight_layers(model)})


SPEC = b2s.CompressorSpec(
    name="ternary",
    family="quantization",
    track="data-free",
    config=TernaryConfig,
    compress=compress,
    codes=(TernaryCode,),
    version="1",
    description="Ternary Weight Networks (Li & Liu 2016), per-channel alpha; an example third-party plugin",
)


@b2s.hookimpl
def b2s_register_compressors(register: Any) -> None:
    register(SPEC)
