"""Exact storage accounting: every bit needed to rebuild the model, against an fp32 baseline.

The baseline is fp32 for every tensor of the inference state_dict, BatchNorm running statistics
included and ``num_batches_tracked`` excluded (it is a training counter, not needed to infer).
The ratio convention everywhere is ``fp32 bits / stored bits`` (bigger is smaller).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

import torch

__all__ = [
    "SizeBreakdown",
    "SizeReport",
    "FP32",
    "ceil_log2",
    "dtype_bits",
    "inference_state",
    "fp32_bits",
    "sparse_index_bits",
    "HEADER_BITS_PER_DIM",
    "HEADER_BITS_PER_FIELD",
    "header_bits",
    "padded_groups",
    "ARTIFACT_ALLOWANCE_BYTES",
    "META_ALLOWANCE_BYTES",
    "allowed_bytes",
]

FP32 = 32
PARTS = ("payload", "scales", "indices", "codebook", "inr", "outliers", "metadata", "raw")


def ceil_log2(n: int) -> int:
    """Bits to address n distinct values (0 for n <= 1)."""
    return 0 if n <= 1 else math.ceil(math.log2(n))


def dtype_bits(dtype: torch.dtype) -> int:
    if dtype == torch.bool:
        return 1
    return torch.empty((), dtype=dtype).element_size() * 8


def inference_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict needed for inference: everything but BatchNorm's ``num_batches_tracked``."""
    return {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


def fp32_bits(tensors: Mapping[str, torch.Tensor] | Iterable[torch.Tensor]) -> int:
    values = tensors.values() if isinstance(tensors, Mapping) else tensors
    return FP32 * sum(int(t.numel()) for t in values)


def sparse_index_bits(nnz: int, rows: int, cols: int) -> tuple[int, str]:
    """Cost of the positions of ``nnz`` kept entries of a rows x cols matrix: the cheaper encoding.

    Returns (bits, encoding): a bitmask costs rows*cols bits; CSR-style indices cost
    nnz*ceil(log2 cols) column indices plus (rows+1) row pointers of ceil(log2(nnz+1)) bits; when
    every entry is kept ("dense") the positions are implied and cost nothing.
    """
    if nnz == rows * cols:
        return 0, "dense"
    bitmask = rows * cols
    csr = nnz * ceil_log2(cols) + (rows + 1) * ceil_log2(nnz + 1)
    return (csr, "csr") if csr < bitmask else (bitmask, "bitmask")


@dataclasses.dataclass(frozen=True)
class SizeBreakdown:
    """Stored bits by part. All values are exact integers of bits."""

    payload: int = 0  # quantized codes, kept values, low-rank factors, student weights
    scales: int = 0  # scales and zero points, means and ranges (stored in tensors)
    indices: int = 0  # sparse indices, bitmasks, trajectory indices, permutations
    codebook: int = 0
    inr: int = 0  # INR parameters at their stored precision
    outliers: int = 0  # outlier values (their positions count under indices)
    metadata: int = 0  # per-tensor headers kept in the code's meta(): shapes, ranks, bit widths, counts
    raw: int = 0  # tensors left uncompressed, at their stored precision

    def __post_init__(self) -> None:
        for part in PARTS:
            value = getattr(self, part)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"SizeBreakdown.{part} must be a non-negative int of bits, got {value!r}")

    @property
    def total(self) -> int:
        return sum(getattr(self, p) for p in PARTS)

    def __add__(self, other: SizeBreakdown) -> SizeBreakdown:
        return SizeBreakdown(**{p: getattr(self, p) + getattr(other, p) for p in PARTS})

    def as_dict(self) -> dict[str, int]:
        return {p: getattr(self, p) for p in PARTS}

    @staticmethod
    def sum(parts: Iterable[SizeBreakdown]) -> SizeBreakdown:
        total = SizeBreakdown()
        for p in parts:
            total = total + p
        return total


@dataclasses.dataclass(frozen=True)
class SizeReport:
    """A whole model's stored size against fp32, with both ratios.

    ``layers_*`` cover only the tensors the compressor touched (the compressed-layers ratio);
    the whole-model ratio also counts everything left raw.
    """

    breakdown: SizeBreakdown
    baseline_bits: int
    layers_baseline_bits: int
    layers_bits: int

    @property
    def total_bits(self) -> int:
        return self.breakdown.total

    @property
    def ratio_model(self) -> float:
        return self.baseline_bits / self.total_bits if self.total_bits else math.inf

    @property
    def ratio_layers(self) -> float:
        if not self.layers_baseline_bits:
            return 1.0
        return self.layers_baseline_bits / self.layers_bits if self.layers_bits else math.inf

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per fp32 scalar of the baseline."""
        return FP32 * self.total_bits / self.baseline_bits if self.baseline_bits else math.nan

    def as_dict(self) -> dict[str, object]:
        return {
            "breakdown": self.breakdown.as_dict(),
            "total_bits": self.total_bits,
            "baseline_bits": self.baseline_bits,
            "layers_baseline_bits": self.layers_baseline_bits,
            "layers_bits": self.layers_bits,
            "ratio_model": self.ratio_model,
            "ratio_layers": self.ratio_layers,
            "bits_per_weight": self.bits_per_weight,
        }


#: The header rule, stated once (checked for every code by :mod:`b2s_bench.compression.contract`): a code's
#: ``bits().metadata`` is exactly :func:`header_bits` of its ``meta()``, i.e. 32 bits for every
#: dimension of a shape and for every other field it holds. What the decoder can derive (from the
#: tensors' lengths, the kind) needs no field, so a lean ``meta()`` is a cheap header.
HEADER_BITS_PER_DIM = 32
HEADER_BITS_PER_FIELD = 32


def _float_bits(value: float) -> int:
    # a value that survives a round trip through fp32 needs one 32-bit word; any other needs a double
    return 32 if math.isnan(value) or float(torch.tensor(value, dtype=torch.float32)) == value else 64


def header_bits(meta: object) -> int:
    """The bits of a header: what a code's ``bits().metadata`` must be for ``meta()``.

    Every leaf of the JSON value counts, wherever it sits (in lists, nested dicts): an int, a bool
    or None is one 32-bit field (so a shape costs ``HEADER_BITS_PER_DIM`` per dimension); a float
    is 32 bits if it is an fp32 value, else 64; a string costs its UTF-8 bytes rounded up to 32-bit
    words (at least one). Dict keys are the format's field names, known from the code's kind, and
    cost nothing. ``header_bits({"shape": [64, 3, 3, 3], "nbits": 4}) == 160``.
    """
    if isinstance(meta, Mapping):
        return sum(header_bits(v) for v in meta.values())
    if isinstance(meta, (list, tuple)):
        return sum(header_bits(v) for v in meta)
    if isinstance(meta, str):
        return HEADER_BITS_PER_FIELD * max(1, math.ceil(len(meta.encode()) / 4))
    if isinstance(meta, float):
        return _float_bits(meta)
    if meta is None or isinstance(meta, (bool, int)):
        return HEADER_BITS_PER_FIELD
    raise TypeError(
        f"a header (meta()) holds only JSON values: str, int, float, bool, None, lists and dicts; "
        f"got {type(meta).__name__}: convert it (e.g. int(x)), or store it in tensors() and count it"
    )


def padded_groups(numel: int, group: int) -> tuple[int, int]:
    """(groups, pad) of ``numel`` values cut into groups of ``group``: the last group is padded.

    The padding rule: the ``pad`` filler values of the last group are stored with the codes and
    counted in ``bits()`` like any other code (a decoder reads whole groups), and ``pad`` is a
    header field. ``padded_groups(72, 32) == (3, 24)``.
    """
    if group < 1 or numel < 0:
        raise ValueError(f"padded_groups needs group >= 1 and numel >= 0, got group={group}, numel={numel}")
    groups = math.ceil(numel / group)
    return groups, groups * group - numel


#: The exact-bits contract, stated once. A code's ``bits()`` has two kinds of parts:
#:
#: - ``metadata``: the header that lives in ``Code.meta()`` (the JSON manifest), e.g. a shape at
#:   ``HEADER_BITS_PER_DIM`` bits per dimension, a rank, a bit width. Nothing stored in tensors may
#:   be counted here.
#: - every other part (payload, scales and zero points, indices, codebook, INR parameters,
#:   outliers, raw): what lives in ``Code.tensors()``.
#:
#: So the tensors a code serializes must fit in ``ceil((bits - metadata) / 8)`` bytes plus
#: ``ARTIFACT_ALLOWANCE_BYTES`` for every bit-packed (uint8) tensor but the first: the padding of a
#: packed stream to whole bytes, and nothing more. A code that under-counts what it stores by one
#: byte per tensor fails.
#: ``Code.meta()`` must stay within ``META_ALLOWANCE_BYTES`` of JSON: data hidden there would escape
#: the count. (:mod:`b2s_bench.compression.contract` checks both, for every cell and in ``check_compressor``.)
ARTIFACT_ALLOWANCE_BYTES = 1
META_ALLOWANCE_BYTES = 4096


def allowed_bytes(bits: int, packed: int) -> int:
    """The most bytes a code's tensors may take for ``bits`` counted bits, ``packed`` of them bit-packed."""
    return math.ceil(bits / 8) + ARTIFACT_ALLOWANCE_BYTES * max(packed - 1, 0)
