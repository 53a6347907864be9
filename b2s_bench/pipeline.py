"""Compositions: a later compressor compresses the payload φ of an earlier one's codes (see
:class:`~b2s_bench.nested.NestedCode`)."""

from __future__ import annotations

from typing import Any

from .compressed import Compressed
from .interface import Code, CompressorSpec, Context
from .nested import NestedCode

__all__ = ["NestedCode", "apply_stage"]


def apply_stage(compressed: Compressed, spec: CompressorSpec, config: Any, ctx: Context) -> Compressed:
    """Compress every payload tensor of every code of ``compressed`` with a per-tensor compressor."""
    if spec.compress_tensor is None:
        raise ValueError(f"compressor {spec.name!r} cannot be a later pipeline stage: it has no compress_tensor")
    codes: dict[str, Code] = {}
    for key, code in compressed.codes.items():
        payload = code.payload()
        if not payload:
            codes[key] = code
            continue
        inner = {n: spec.compress_tensor(f"{key}/{n}", t, config, ctx) for n, t in payload.items()}
        codes[key] = NestedCode(code, inner)
    return compressed.with_codes(codes)
