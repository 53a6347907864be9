"""The exact-bits contract, checked from what a code really serializes, not from how it counts.

A code's ``bits()`` is its own claim; the bytes of the tensors it writes to the artifact are the
evidence. :func:`storage_problems` compares the two for every code of a compressed model (the
limits are in :mod:`b2s_bench.compression.sizes`), so a compressor that under-reports its bits cannot win a
leaderboard: the runner fails its cells, and ``check_compressor`` fails its tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .codes import Code, NestedCode
from .compressed import code_entry, restore_code
from .packing import pack_bits
from .sizes import META_ALLOWANCE_BYTES, allowed_bytes, header_bits

__all__ = [
    "SizeAccountingError",
    "StoredTensors",
    "serialized_bytes",
    "storage_problems",
    "check_storage",
    "packed_count",
    "header_problems",
    "symbol_problems",
    "stored_decode_problems",
    "check_stored_decode",
    "check_baseline",
]

#: decoding the rebuilt code on the same device may differ from the first decode only in the last bits
#: (a GPU kernel's order of summation): the largest difference allowed, relative to the largest weight
DECODE_TOLERANCE = 1e-6


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


TensorsOf = Callable[[Code], Mapping[str, torch.Tensor]]


class StoredTensors:
    """Each code's ``tensors()``, computed once and shared by the checks of one result: they pack bits
    and convert dtypes, so three checks calling them each (storage, symbols, the stored decode) cost
    three times what one does (EfficientNet-Lite0's 50 codes: 0.06 s against 0.02 s)."""

    def __init__(self) -> None:
        self._memo: dict[int, tuple[Code, Mapping[str, torch.Tensor]]] = {}

    def __call__(self, code: Code) -> Mapping[str, torch.Tensor]:
        hit = self._memo.get(id(code))
        if hit is None or hit[0] is not code:  # the code is kept with its tensors, so its id is not reused
            hit = (code, code.tensors())
            self._memo[id(code)] = hit
        return hit[1]


def symbol_problems(key: str, code: Code, tensors_of: TensorsOf | None = None) -> list[str]:
    """A message per symbol stream a code declares (:meth:`Code.symbols`) that is not what it stores and
    counts: ``tensors()[name]`` must be ``pack_bits(values, width)``, counted as ``numel * width`` bits
    under ``part``. An entropy coder trusts these, so a stream that lies would decode to other weights."""
    if isinstance(code, NestedCode):
        found = symbol_problems(f"{key} (outer)", code.outer, tensors_of)
        for name, inner in code.inner.items():
            found += symbol_problems(f"{key}/{name}", inner, tensors_of)
        return found
    found = []
    streams = code.symbols()
    if not streams:
        return found
    tensors, breakdown = (code.tensors() if tensors_of is None else tensors_of(code)), code.bits().as_dict()
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


def storage_problems(codes: Mapping[str, Code], tensors_of: TensorsOf | None = None) -> list[str]:
    """One message per code whose serialized tensors exceed its counted bits, whose counted header
    is not the one its meta() holds, or whose header is too big to be a header, naming the tensor.
    ``tensors_of``: a :class:`StoredTensors` shared with the caller's other checks."""
    tensors_of = StoredTensors() if tensors_of is None else tensors_of
    problems = []
    for key, code in codes.items():
        problems += header_problems(key, code)
        problems += symbol_problems(key, code, tensors_of)
        breakdown = code.bits()
        bits = breakdown.total - breakdown.metadata  # the header lives in meta(), not in the tensors
        tensors = tensors_of(code)
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


def check_storage(codes: Mapping[str, Code], tensors_of: TensorsOf | None = None) -> None:
    """Raise :class:`SizeAccountingError` listing every code that stores more than it counts."""
    problems = storage_problems(codes, tensors_of)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise SizeAccountingError(f"size accounting: {shown}")


def stored_decode_problems(
    codes: Mapping[str, Code],
    decoded: Mapping[str, torch.Tensor],
    code_types: Mapping[str, type[Code]],
    tensors_of: TensorsOf | None = None,
) -> list[str]:
    """One message per code whose artifact would decode to other weights than ``decoded`` (what is evaluated).

    Each code is rebuilt from what it stores, its ``meta()`` and ``tensors()`` (as the artifact holds
    them, through the code classes of ``code_types``), on the device of its decoded weights, and decoded
    again. Counting bits proves nothing about a code whose ``decode()`` reads a field it never stores
    (the dense weight kept in memory), or a compressor that hands the runner other tensors through
    ``keep_decoded``: this does. Differences up to :data:`DECODE_TOLERANCE` of the largest weight are a
    kernel's rounding, not information.
    """
    problems: list[str] = []
    where = {key: f"{key} ({type(code).__name__}, kind {code.kind!r})" for key, code in codes.items()}
    # as the artifact is read back: every code's entry through JSON and its tensors, all of them restored (in
    # the manifest's sorted order) before any is decoded, since codes may share a part that one of them stores
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, Any] = {}
    for key, code in codes.items():
        try:
            entries[key] = json.loads(json.dumps(code_entry(code, f"code/{key}", tensors, tensors_of)))
        except Exception as e:  # a code that cannot be written as an artifact is the finding
            problems.append(f"{where[key]} cannot be written as an artifact: {type(e).__name__}: {e}")
    rebuilt: dict[str, Code] = {}
    for key in sorted(entries):
        device = decoded[key].device
        try:
            own = {k: v.to(device) for k, v in tensors.items() if k.startswith(f"code/{key}/")}
            rebuilt[key] = restore_code(entries[key], f"code/{key}", own, code_types)
        except Exception as e:
            problems.append(f"{where[key]} cannot be rebuilt from its meta() and tensors(): {type(e).__name__}: {e}")
    for key in sorted(rebuilt):
        want = decoded[key]
        try:
            again = rebuilt[key].decode().detach()
        except Exception as e:
            problems.append(f"{where[key]} cannot be decoded from its meta() and tensors(): {type(e).__name__}: {e}")
            continue
        if tuple(again.shape) != tuple(want.shape):
            problems.append(
                f"{where[key]} decodes to shape {tuple(again.shape)} from its stored tensors, {tuple(want.shape)} as evaluated"
            )
            continue
        if torch.equal(again.to(want.dtype), want):
            continue
        scale = float(want.abs().max()) if want.numel() else 0.0
        diff = float((again.to(want.device, torch.float64) - want.double()).abs().max())
        if not diff <= DECODE_TOLERANCE * max(scale, 1e-30):
            problems.append(
                f"{where[key]}: its meta() and tensors() decode to weights up to {diff:.3g} away from the ones evaluated "
                f"(largest |w| {scale:.3g}); decode() must use only what tensors() and meta() store"
            )
    return problems


def check_stored_decode(
    codes: Mapping[str, Code],
    decoded: Mapping[str, torch.Tensor],
    code_types: Mapping[str, type[Code]],
    tensors_of: TensorsOf | None = None,
) -> None:
    """Raise :class:`SizeAccountingError` when the stored codes decode to other weights than the evaluated ones."""
    problems = stored_decode_problems(codes, decoded, code_types, tensors_of)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise SizeAccountingError(f"decoded weights are not what is stored: {shown}")


def check_baseline(claimed: Mapping[str, tuple[int, ...]], dense: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`SizeAccountingError` unless a compressed model's ``original_shapes`` (its fp32 baseline, the
    numerator of every ratio) are the dense model's inference state, key for key and shape for shape: a
    compressor does not get to say how large the model it compressed was."""
    want = {k: tuple(v.shape) for k, v in dense.items()}
    got = {k: tuple(s) for k, s in claimed.items()}
    if got == want:
        return
    wrong = [f"{k} {got[k]} (the model's: {want[k]})" for k in sorted(set(got) & set(want)) if got[k] != want[k]]
    extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
    parts = [
        *([f"shapes {', '.join(wrong[:3])}"] if wrong else []),
        *([f"tensors the model does not have: {', '.join(extra[:3])}"] if extra else []),
        *([f"none for {', '.join(missing[:3])}"] if missing else []),
    ]
    raise SizeAccountingError(
        "size accounting: the fp32 baseline (Compressed.original_shapes) is not the dense model's inference state: "
        + "; ".join(parts)
        + ". Build the result with Compressed.from_codes(model, ...) or pass inference_state(model)'s shapes"
    )
