"""Nested codes: an outer code whose fp32 payload tensors are stored as inner codes.

Pruning then quantization quantizes the kept values; Big2Small then quantization quantizes the
INR parameters. The bits of the nested code are the outer code's bits, less the fp32 payload it no
longer stores, plus the inner codes' bits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from .interface import Code
from .sizes import FP32, SizeBreakdown

__all__ = ["NestedCode"]


@dataclasses.dataclass
class NestedCode(Code):
    """An outer code whose payload tensors are stored as inner codes."""

    outer: Code
    inner: dict[str, Code]
    kind = "nested"

    def __post_init__(self) -> None:
        payload = self.outer.payload()
        for name in self.inner:
            if name not in payload:
                raise KeyError(f"{type(self.outer).__name__} has no payload tensor {name!r}")

    @property
    def shape(self) -> tuple[int, ...]:
        return self.outer.shape

    def resolved_outer(self) -> Code:
        return self.outer.replace_payload({n: c.decode() for n, c in self.inner.items()})

    def decode(self) -> torch.Tensor:
        return self.resolved_outer().decode()

    def bits(self) -> SizeBreakdown:
        outer = self.outer.bits().as_dict()
        payload = self.outer.payload()
        part = self.outer.payload_part
        outer[part] -= FP32 * sum(payload[n].numel() for n in self.inner)
        if outer[part] < 0:
            raise ValueError(f"{type(self.outer).__name__} does not count its payload as fp32 under {part!r}")
        return SizeBreakdown(**outer) + SizeBreakdown.sum(c.bits() for c in self.inner.values())

    def regularizer(self) -> torch.Tensor:
        return self.resolved_outer().regularizer() + sum((c.regularizer() for c in self.inner.values()), torch.zeros(()))

    def tensors(self) -> dict[str, torch.Tensor]:
        own = {k: v for k, v in self.outer.tensors().items() if k not in self.inner}
        for n, c in self.inner.items():
            own.update({f"{n}/{k}": v for k, v in c.tensors().items()})
        return own

    def meta(self) -> dict[str, Any]:
        return {
            "outer": {"kind": self.outer.kind, "meta": self.outer.meta(),
                      "tensors": sorted(k for k in self.outer.tensors() if k not in self.inner)},
            "inner": {n: {"kind": c.kind, "meta": c.meta(), "tensors": sorted(c.tensors())} for n, c in self.inner.items()},
        }

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Code:
        raise TypeError("nested codes are restored by the artifact loader, which knows every code type")

    def stats(self) -> dict[str, Any]:
        return {**self.outer.stats(), "inner": {n: c.stats() for n, c in self.inner.items()}}
