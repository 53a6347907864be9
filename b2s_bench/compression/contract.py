"""The exact-bits contract, checked from what a code really serializes, not from how it counts.

A code's ``bits()`` is its own claim; the bytes of the tensors it writes to the artifact are the
evidence. :func:`storage_problems` compares the two for every code of a compressed model (the
limits are in :mod:`b2s_bench.compression.sizes`), so a compressor that under-reports its bits cannot win a
leaderboard: the runner fails its cells, and ``check_compressor`` fails its tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import torch

from .codes import Code, NestedCode
from .packing import pack_bits
from .sizes import META_ALLOWANCE_BYTES, allowed_bytes, header_bits

__all__ = [
    "SizeAccountingError",
    "serialized_bytes",
    "storage_problems",
    "check_storage",
    "packed_count",
    "header_problems",
    "symbol_problems",
]


class SizeAccountingError(Exception):
    """A code stores more than it counts."""


def serialized_bytes(tensors: Mapping[str, torch.Tensor]) -> int:
    """The payload bytes of tensors as safetensors writes them (the header aside)."""
    return sum(int(t.numel()) * t.element_size() for t in tensors.values())


def packed_count(tensors: Mapping[str, torch.Tensor]) -> int:
    """Bit-packed streams (uint8 tensors): each may end in a partly used byte."""
    return sum(1 for t in tensors.values() if t.dtype == torch.uint8)


def _meta_bytes(meta: Any) -> int:
    return len(json.dumps(meta, sort_keys=True, default=str).encode())


def header_problems(key: str, code: Code) -> list[str]:
    """A message if a code's counted ``metadata`` is not :func:`~b2s_bench.compression.sizes.header_bits` of its
    ``meta()`` (the one header rule). A nested code is checked part by part: its own meta() is the
    artifact's table of contents (kinds, tensor names), and its parts' headers are what it counts."""
    if isinstance(code, NestedCode):
        found = header_problems(f"{key} (outer)", code.outer)
        for name, inner in code.inner.items():
            found += header_problems(f"{key}/{name}", inner)
        return found
    counted = code.bits().metadata
    try:
        due = header_bits(code.meta())
    except TypeError as e:
        return [f"{key} ({type(code).__name__}): {e}"]
    if counted == due:
        return []
    return [
        f"{key} ({type(code).__name__}, kind {code.kind!r}) counts {counted} metadata bits but its meta() header "
        f"holds {due} (b2s.header_bits(meta()): 32 bits a shape dimension and a field): count "
        f"metadata=b2s.header_bits(self.meta()) in bits()"
    ]


def symbol_problems(key: str, code: Code) -> list[str]:
    """A message per symbol stream a code declares (:meth:`Code.symbols`) that is not what it stores and
    counts: ``tensors()[name]`` must be ``pack_bits(values, width)``, counted as ``numel * width`` bits
    under ``part``. An entropy coder trusts these, so a stream that lies would decode to other weights."""
    if isinstance(code, NestedCode):
        found = symbol_problems(f"{key} (outer)", code.outer)
        for name, inner in code.inner.items():
            found += symbol_problems(f"{key}/{name}", inner)
        return found
    found = []
    streams = code.symbols()
    if not streams:
        return found
    tensors, breakdown = code.tensors(), code.bits().as_dict()
    for name, sym in streams.items():
        where = f"{key} ({type(code).__name__}) symbol stream {name!r}"
        values = sym.values
        if values.dtype != torch.int64 or values.dim() != 1:
            found.append(f"{where}: values must be a 1-D int64 tensor, got {values.dtype} of shape {tuple(values.shape)}")
            continue
        if not 1 <= sym.width <= 32 or (values.numel() and (int(values.min()) < 0 or int(values.max()) >= 2**sym.width)):
            found.append(f"{where}: values must lie in [0, 2**{sym.width})")
            continue
        if sym.part not in breakdown or breakdown[sym.part] < values.numel() * sym.width:
            found.append(f"{where}: {values.numel() * sym.width} bits are not counted under {sym.part!r}")
        stored = tensors.get(name)
        if stored is None or not torch.equal(stored, pack_bits(values, sym.width)):
            found.append(f"{where}: tensors()[{name!r}] is not pack_bits(values, {sym.width})")
    return found


def storage_problems(codes: Mapping[str, Code]) -> list[str]:
    """One message per code whose serialized tensors exceed its counted bits, whose counted header
    is not the one its meta() holds, or whose header is too big to be a header, naming the tensor."""
    problems = []
    for key, code in codes.items():
        problems += header_problems(key, code)
        problems += symbol_problems(key, code)
        breakdown = code.bits()
        bits = breakdown.total - breakdown.metadata  # the header lives in meta(), not in the tensors
        tensors = code.tensors()
        stored = serialized_bytes(tensors)
        limit = allowed_bytes(bits, packed_count(tensors))
        if stored > limit:
            problems.append(
                f"{key} ({type(code).__name__}, kind {code.kind!r}) stores {stored} bytes of tensors but "
                f"counts {bits} bits for them ({math.ceil(bits / 8)} bytes, allowed {limit}; the "
                f"{breakdown.metadata} metadata bits are its meta() header)"
            )
        meta = _meta_bytes(code.meta())
        if meta > META_ALLOWANCE_BYTES:
            problems.append(
                f"{key} ({type(code).__name__}) has a {meta}-byte header (meta()); headers are limited "
                f"to {META_ALLOWANCE_BYTES} bytes: store data in tensors() and count it in bits()"
            )
    return problems


def check_storage(codes: Mapping[str, Code]) -> None:
    """Raise :class:`SizeAccountingError` listing every code that stores more than it counts."""
    problems = storage_problems(codes)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise SizeAccountingError(f"size accounting: {shown}")
