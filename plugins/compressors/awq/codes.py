"""The codes of ``awq``: quantize's UniformCode of the scaled weight W·diag(s), and, where no earlier
operation absorbs 1/s, :class:`AWQCode`, which stores s too and undoes it at decode.

AWQCode decodes to Q(W·diag(s))·diag(s)⁻¹: the layer then computes exactly what the scaled layer
computes on the scaled input, (x·diag(s)⁻¹)·Q(W·diag(s))ᵀ. Bits: UniformCode's (N·b codes, a scale and,
when affine, a b-bit zero point per group, the header) plus the per-input-channel scale at
``scale_bits`` each, counted under ``scales``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from b2s_bench import SizeBreakdown

from ..quantize.codes import UniformCode

__all__ = ["AWQCode", "UniformCode"]


@dataclasses.dataclass
class AWQCode(UniformCode):
    """A UniformCode of W·diag(s) with its per-input-channel scale s: decodes to Q(W·diag(s))·diag(s)⁻¹."""

    channel_scale: torch.Tensor = dataclasses.field(default_factory=lambda: torch.ones(0))
    kind = "awq.scaled"

    def unflatten(self, groups: torch.Tensor) -> torch.Tensor:
        scaled = super().unflatten(groups)
        s = self.channel_scale.float().to(scaled.device)
        return scaled / s.reshape(1, -1, *([1] * (scaled.dim() - 2)))

    def bits(self) -> SizeBreakdown:
        base = super().bits()
        return dataclasses.replace(base, scales=base.scales + self.channel_scale.numel() * self.scale_bits)

    def tensors(self) -> dict[str, torch.Tensor]:
        dtype = torch.float16 if self.scale_bits == 16 else torch.float32
        return {**super().tensors(), "channel_scale": self.channel_scale.to(dtype)}

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "channels": int(self.channel_scale.numel())}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> AWQCode:
        base = UniformCode.restore(meta, tensors)
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(UniformCode)}
        return cls(**fields, channel_scale=tensors["channel_scale"].float())

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "stored_scale": True}
