"""One coded symbol stream: its coded bytes and its stored probability model.

**The stored model** is a table over the used symbols with one ``field_bits``-bit field each: the
Huffman code length (``field_bits`` = the bit length of the longest code) or the ANS quantized
count (``field_bits`` = the precision). It is stored in one of two layouts, whichever is smaller:

- ``dense``: a field for every value of the ``width``-bit alphabet, 0 for an unused symbol
  (``2**width * field_bits`` bits; used symbols have fields >= 1);
- ``sparse``: the used symbols' values (``width`` bits each, increasing), then their fields
  (``used * (width + field_bits)`` bits).

Both are one bit string, packed MSB first into a uint8 tensor (its last byte padded), and counted
at their exact bits under ``codebook``. The header (the code's meta) holds per stream: the coder,
the symbol count, the width, the layout, ``field_bits`` and the number of used symbols.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from b2s_bench import pack_bits, unpack_bits

from . import ans, huffman

__all__ = ["CodedStream", "encode_stream", "entropy_bits"]

LAYOUTS = ("dense", "sparse")


def entropy_bits(values: np.ndarray) -> float:
    """The empirical (order-0) entropy of ``values`` in bits per symbol (0 for fewer than 2 symbols)."""
    return _entropy(np.unique(values, return_counts=True)[1])


def _entropy(counts: np.ndarray) -> float:
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _bits_of(values: np.ndarray, nbits: int) -> np.ndarray:
    packed = pack_bits(torch.from_numpy(np.ascontiguousarray(values, dtype=np.int64)), nbits).numpy()
    return np.unpackbits(packed, count=values.size * nbits)


def _values_of(bits: np.ndarray, nbits: int, count: int) -> np.ndarray:
    return unpack_bits(torch.from_numpy(np.packbits(bits)), nbits, count).numpy()


@dataclasses.dataclass
class CodedStream:
    """A symbol stream as coded bytes plus its model (see the module docstring for the layout).

    ``part`` (the size part the stream is counted under) and ``entropy`` (bits per symbol) are not
    stored: they are the wrapped code's and the decoded values' facts.
    """

    coder: str
    count: int
    width: int
    layout: str
    field_bits: int
    used: int
    data: torch.Tensor  # uint8: the coded bytes
    model: torch.Tensor  # uint8: the packed model table
    part: str = "payload"
    entropy: float = 0.0

    @property
    def model_bits(self) -> int:
        if self.layout == "dense":
            return 2**self.width * self.field_bits
        return self.used * (self.width + self.field_bits)

    @property
    def data_bits(self) -> int:
        return 8 * int(self.data.numel())

    def meta(self) -> dict[str, Any]:
        return {
            "coder": self.coder,
            "count": self.count,
            "width": self.width,
            "layout": self.layout,
            "field_bits": self.field_bits,
            "used": self.used,
        }

    @classmethod
    def restore(cls, meta: dict[str, Any], data: torch.Tensor, model: torch.Tensor) -> CodedStream:
        if meta["coder"] not in ("huffman", "ans") or meta["layout"] not in LAYOUTS:
            raise ValueError(f"unknown coded stream {meta!r}")
        return cls(
            str(meta["coder"]),
            int(meta["count"]),
            int(meta["width"]),
            str(meta["layout"]),
            int(meta["field_bits"]),
            int(meta["used"]),
            data,
            model,
        )

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """(used symbol values, their fields) read back from the stored model."""
        bits = np.unpackbits(self.model.numpy(), count=self.model_bits)
        if self.layout == "dense":
            fields = _values_of(bits, self.field_bits, 2**self.width)
            symbols = np.flatnonzero(fields)
            return symbols.astype(np.int64), fields[symbols]
        cut = self.used * self.width
        return _values_of(bits[:cut], self.width, self.used), _values_of(bits[cut:], self.field_bits, self.used)

    def decode(self) -> np.ndarray:
        """The stream's symbol values (int64), exactly as encoded."""
        symbols, fields = self.table()
        data = self.data.numpy()
        if self.coder == "huffman":
            return huffman.decode(data, fields, self.count, symbols)
        index = ans.decode(data, fields, self.count)
        return symbols[index] if self.count else np.zeros(0, dtype=np.int64)


def _model_tensor(symbols: np.ndarray, fields: np.ndarray, width: int, field_bits: int) -> tuple[str, torch.Tensor]:
    dense_bits, sparse_bits = 2**width * field_bits if width <= 24 else math.inf, symbols.size * (width + field_bits)
    if dense_bits <= sparse_bits:
        table = np.zeros(2**width, dtype=np.int64)
        table[symbols] = fields
        bits = _bits_of(table, field_bits)
        layout = "dense"
    else:
        bits = np.concatenate([_bits_of(symbols, width), _bits_of(fields, field_bits)])
        layout = "sparse"
    return layout, torch.from_numpy(np.packbits(bits))


def encode_stream(
    values: np.ndarray, width: int, coder: str, max_code_length: int, ans_precision: int, part: str = "payload"
) -> CodedStream:
    """Code one stream of ``width``-bit symbol values with ``coder`` ("huffman" or "ans")."""
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    if width <= 16:  # a count per alphabet value: no sort
        all_counts = np.bincount(values, minlength=2**width)
        symbols = np.flatnonzero(all_counts)
        counts = all_counts[symbols]
        lookup = np.zeros(2**width, dtype=np.int64)
        lookup[symbols] = np.arange(symbols.size)
        index = lookup[values]
    else:
        symbols, index, counts = np.unique(values, return_inverse=True, return_counts=True)
        index = index.reshape(-1)
    if coder == "huffman":
        fields = huffman.code_lengths(counts, max_code_length)
        data, _ = huffman.encode(index, fields)
        field_bits = max(1, int(fields.max()).bit_length()) if fields.size else 1
    elif coder == "ans":
        fields = ans.quantized_counts(counts, ans_precision)
        data = ans.encode(index, fields)
        field_bits = ans_precision
    else:
        raise ValueError(f"coder must be 'huffman' or 'ans', got {coder!r}")
    layout, model = _model_tensor(symbols, fields, width, field_bits)
    return CodedStream(
        coder,
        int(values.size),
        width,
        layout,
        field_bits,
        int(symbols.size),
        torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8)),
        model,
        part,
        _entropy(counts),
    )
