"""``EntropyCode``: any code whose symbol streams are stored entropy-coded.

It wraps the inner code (kept in memory: ``decode()`` is the inner code's) and, per coded stream,
the coded bytes (``NAME.coded``) and the model (``NAME.model``) in place of the fixed-width
``pack_bits`` tensor ``NAME``. Bits: the inner code's, less ``count * width`` under each coded
stream's part, plus the coded bytes (8 bits a byte) under that part, plus each model's exact bits
under ``codebook``; the header is ``b2s.header_bits(meta())``, and the inner code's header is part
of this meta (its kind and meta), so it is counted once, here.

The code forwards to the inner code what a pipeline asks of a code (payload, shape, regularizer,
stats, deployed form, network form), so it may also be the outer code of a nested one. Its payload
tensors are fp32 and never symbol streams, so replacing them keeps the coded streams as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import Code, SizeBreakdown, pack_bits

from .streams import CodedStream, entropy_bits

__all__ = ["EntropyCode", "CODED", "MODEL"]

CODED, MODEL = "{}.coded", "{}.model"


@dataclasses.dataclass
class EntropyCode(Code):
    """An inner code with some of its symbol streams (by tensor name) stored entropy-coded."""

    inner: Code
    streams: dict[str, CodedStream]
    kind = "entropy.coded"
    wraps_codes = True

    def __post_init__(self) -> None:
        own = self.inner.tensors()
        for name in self.streams:
            if name not in own:
                raise KeyError(f"{type(self.inner).__name__} stores no tensor {name!r} to entropy-code")
            for stored in (CODED.format(name), MODEL.format(name)):
                if stored in own:
                    raise ValueError(f"{type(self.inner).__name__} already stores a tensor {stored!r}")

    @property
    def shape(self) -> tuple[int, ...]:
        return self.inner.shape

    @property
    def payload_part(self) -> str:  # the inner code's, so that a nested code counts its payload there
        return self.inner.payload_part

    @payload_part.setter
    def payload_part(self, value: str) -> None:
        raise AttributeError("an entropy-coded code's payload part is its inner code's")

    def decode(self) -> torch.Tensor:
        return self.inner.decode()

    def bits(self) -> SizeBreakdown:
        parts = self.inner.bits().as_dict()
        for s in self.streams.values():
            parts[s.part] += s.data_bits - s.count * s.width
            parts["codebook"] += s.model_bits
        parts["metadata"] = b2s.header_bits(self.meta())
        return SizeBreakdown(**parts)

    def regularizer(self) -> torch.Tensor:
        return self.inner.regularizer()

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {k: v for k, v in self.inner.tensors().items() if k not in self.streams}
        for name, s in self.streams.items():
            out[CODED.format(name)] = s.data
            out[MODEL.format(name)] = s.model
        return out

    def meta(self) -> dict[str, Any]:
        return {
            "kind": self.inner.kind,
            "meta": self.inner.meta(),
            "streams": {name: s.meta() for name, s in self.streams.items()},
        }

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Code:
        raise TypeError("an entropy-coded code wraps a code of any kind: the artifact loader restores it (restore_wrapped)")

    @classmethod
    def restore_wrapped(
        cls,
        meta: Mapping[str, Any],
        tensors: Mapping[str, torch.Tensor],
        restore: Callable[[str, Mapping[str, Any], Mapping[str, torch.Tensor]], Code],
    ) -> Code:
        stored = {CODED.format(n) for n in meta["streams"]} | {MODEL.format(n) for n in meta["streams"]}
        inner_tensors = {k: v for k, v in tensors.items() if k not in stored}
        streams: dict[str, CodedStream] = {}
        for name, entry in meta["streams"].items():
            stream = CodedStream.restore(entry, tensors[CODED.format(name)], tensors[MODEL.format(name)])
            values = stream.decode()
            stream.entropy = entropy_bits(values)
            inner_tensors[name] = pack_bits(torch.from_numpy(values), stream.width)
            streams[name] = stream
        inner = restore(meta["kind"], meta["meta"], inner_tensors)
        declared = inner.symbols()
        for name, stream in streams.items():
            if name not in declared:
                raise ValueError(f"restored {type(inner).__name__} declares no symbol stream {name!r}")
            stream.part = declared[name].part
        return cls(inner, streams)

    def as_network(self, init: str = "code", generator: torch.Generator | None = None) -> b2s.DecoderNetwork | None:
        return self.inner.as_network(init, generator)

    def payload(self) -> dict[str, torch.Tensor]:
        return self.inner.payload()

    def replace_payload(self, tensors: Mapping[str, torch.Tensor]) -> Code:
        return EntropyCode(self.inner.replace_payload(tensors), self.streams)

    def symbols(self) -> dict[str, b2s.Symbols]:
        return {}  # already coded

    def stats(self) -> dict[str, Any]:
        facts = {
            name: {
                "coder": s.coder,
                "symbols": s.count,
                "entropy_bits_per_symbol": s.entropy,
                "coded_bits_per_symbol": s.data_bits / s.count if s.count else 0.0,
                "fixed_bits_per_symbol": s.width,
                "model_bits": s.model_bits,
            }
            for name, s in self.streams.items()
        }
        return {**self.inner.stats(), "entropy": facts}

    def deployed(self, layer: nn.Module) -> nn.Module | None:
        return self.inner.deployed(layer)
