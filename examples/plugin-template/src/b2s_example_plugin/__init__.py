"""Ternary Weight Networks (Li & Liu, 2016) as a b2s-bench plugin.

Per output channel: Δ = t·mean|W| (t = 0.7 in the paper), α = mean of |W| where |W| > Δ, and
Ŵ = α·sign(W)·[|W| > Δ].

Stored, and counted exactly: 2 bits per weight (codes −1, 0, +1, bit-packed) under ``payload``,
α in fp32 per channel under ``scales``, and a per-tensor header, the shape at
``b2s.header_bits(meta())`` (32 bits a dimension), under ``metadata`` (it lives in ``meta()``).

Theory form: a rounding layer onto the 3-level grid {−α, 0, α}; R(φ) is that grid's indicator. The
network form (:class:`ScaleNetwork`) fits α for the code's ternary pattern, which TWN's α solves in
closed form, so the benchmark's solver check compares the two.

This module imports only ``b2s_bench``, the public API: that is all a plugin needs. See
docs/writing-a-compressor.md in the b2s-bench repository for the whole interface.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

import b2s_bench as b2s

__all__ = ["TernaryCode", "ScaleNetwork", "TernaryConfig", "ternarize", "compress", "SPEC"]


@dataclasses.dataclass
class TernaryCode(b2s.Code):
    """One ternary tensor: W ≈ α ⊙ T with T in {−1, 0, 1} and one α per output channel."""

    codes: torch.Tensor  # int8 in {-1, 0, 1}, the tensor's shape
    alpha: torch.Tensor  # (out_channels,) fp32
    kind = "ternary.twn"  # unique: the artifact loader finds this class by it

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    def decode(self) -> torch.Tensor:
        view = (-1,) + (1,) * (self.codes.dim() - 1)
        return self.codes.float() * self.alpha.view(view)

    def bits(self) -> b2s.SizeBreakdown:
        # exact integers: what tensors() stores, and the header that meta() holds
        return b2s.SizeBreakdown(
            payload=2 * self.codes.numel(), scales=32 * self.alpha.numel(), metadata=b2s.header_bits(self.meta())
        )  # {"shape": [...]}: 32 bits a dim

    def regularizer(self) -> torch.Tensor:
        return torch.zeros(())  # the grid's indicator: every stored weight is on the ternary grid

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"codes": b2s.pack_bits(self.codes.to(torch.int64) + 1, 2), "alpha": self.alpha.float()}

    def meta(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> TernaryCode:
        shape = tuple(meta["shape"])
        codes = (b2s.unpack_bits(tensors["codes"], 2, math.prod(shape)) - 1).to(torch.int8).reshape(shape)
        return cls(codes, tensors["alpha"].float())

    def as_network(self, init: str = "code", generator: torch.Generator | None = None) -> ScaleNetwork:
        return ScaleNetwork(self, init, generator)

    def stats(self) -> dict[str, Any]:
        return {"zeros": float((self.codes == 0).float().mean())}  # per-tensor facts for the record


class ScaleNetwork(b2s.DecoderNetwork):
    """g(α) = α ⊙ T for the code's fixed ternary pattern T: the parameters φ are the scales α ≥ 0.

    For a fixed pattern, TWN's α (the mean magnitude of the kept weights) is the exact least-squares
    solution, so the code is this network's closed form (``solution = "closed form"``, the default)
    and the generic solver, started from a random α, should reach it: that is the ``solver_gap``
    check. The pattern itself comes from TWN's threshold, an approximation of the best ternary
    pattern, so a network over the pattern too would not have TWN's code as its closed form.

    R(α) = Σ max(0, −α)² is the squared distance to the constraint α ≥ 0, and ``project()`` clamps α
    onto it after every step (projected gradient), so the solver needs no weight on R.
    """

    projection = "step"
    solver_lam = 0.0
    pattern: torch.Tensor  # a buffer (registered in __init__), declared for type checkers

    def __init__(self, code: TernaryCode, init: str = "code", generator: torch.Generator | None = None):
        super().__init__()
        self.register_buffer("pattern", code.codes.float())
        alpha = code.alpha.detach().float().clone()
        if init == "random":
            alpha = torch.rand(alpha.shape, generator=generator) * 2 * float(alpha.mean().clamp(min=1e-3))
        self.alpha = nn.Parameter(alpha)

    def forward(self) -> torch.Tensor:
        return self.pattern * self.alpha.view((-1,) + (1,) * (self.pattern.dim() - 1))

    def regularizer(self) -> torch.Tensor:
        return torch.relu(-self.alpha).pow(2).sum()

    @torch.no_grad()
    def project(self) -> None:
        self.alpha.clamp_(min=0.0)


@dataclasses.dataclass(frozen=True)
class TernaryConfig:
    """threshold: Δ as a multiple of mean|W| per channel (0.7 in the paper)."""

    threshold: float = 0.7

    def __post_init__(self) -> None:
        b2s.check(0 < self.threshold < 2, f"threshold must be in (0, 2), got {self.threshold}", "threshold")


def ternarize(w: torch.Tensor, threshold: float) -> TernaryCode:
    """TWN's code of one tensor (per output channel)."""
    rows = w.detach().float().cpu().reshape(w.shape[0], -1)
    delta = threshold * rows.abs().mean(dim=1, keepdim=True)
    keep = rows.abs() > delta
    alpha = (rows.abs() * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
    codes = (torch.sign(rows) * keep).to(torch.int8).reshape(w.shape)
    return TernaryCode(codes, alpha)


def compress(model: nn.Module, config: TernaryConfig, ctx: b2s.Context) -> b2s.Compressed:
    """Ternarize every conv and linear weight; everything else stays raw (and is counted)."""
    state = model.state_dict()
    codes = {key: ternarize(state[key], config.threshold) for key in b2s.weight_layers(model)}
    return b2s.Compressed.from_codes(model, codes)


SPEC = b2s.CompressorSpec(
    name="ternary",
    family="quantization",
    track="data-free",
    config=TernaryConfig,
    compress=compress,
    codes=(TernaryCode,),
    version="2",  # bump whenever results change (it is part of every cell id); 2: the header is counted
    description="Ternary Weight Networks (Li & Liu 2016), per-channel alpha; an example third-party plugin",
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
