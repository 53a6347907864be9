"""Asymmetric numeral systems through ``constriction`` (``pip install "b2s-bench[entropy]"``).

The model is the used symbols' counts quantized to ``precision`` bits: each count is scaled so
that the most frequent symbol gets ``2**precision - 1``, rounded, and raised to at least 1 (every
used symbol must stay codable); the probabilities are those integers over their sum. The coder is
constriction's stack coder (``AnsCoder``, 32-bit words) with a ``Categorical`` model built from
these probabilities (its own fixed-point quantization is deterministic, so the decoder, which
builds the same model from the same stored integers, reads exactly what was written). The coded
stream is the coder's 32-bit words, little-endian.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import b2s_bench as b2s

__all__ = ["quantized_counts", "encode", "decode", "constriction"]


def constriction() -> Any:
    """The ``constriction`` module, or a MissingPrerequisite saying how to install it."""
    try:
        import constriction as module
    except ImportError as e:
        raise b2s.MissingPrerequisite(
            'entropy coder "ans" needs the constriction package: pip install "b2s-bench[entropy]" '
            "(or use coder: huffman, which needs nothing)"
        ) from e
    return module


def quantized_counts(counts: np.ndarray, precision: int) -> np.ndarray:
    """Counts scaled to ``precision`` bits (the most frequent symbol gets ``2**precision - 1``), each >= 1."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size == 0:
        return np.zeros(0, dtype=np.int64)
    top = 2**precision - 1
    return np.clip(np.rint(counts * (top / counts.max())), 1, top).astype(np.int64)


def _model(quantized: np.ndarray) -> Any:
    probabilities = quantized.astype(np.float64) / float(quantized.sum())
    return constriction().stream.model.Categorical(probabilities, perfect=False)


def encode(index: np.ndarray, quantized: np.ndarray) -> np.ndarray:
    """Encode symbol indices (into ``quantized``) as bytes; nothing for a one-symbol table."""
    if index.size == 0 or quantized.size <= 1:
        return np.zeros(0, dtype=np.uint8)
    coder = constriction().stream.stack.AnsCoder()
    coder.encode_reverse(np.ascontiguousarray(index, dtype=np.int32), _model(quantized))
    words = np.asarray(coder.get_compressed(), dtype="<u4")
    return words.view(np.uint8).copy()


def decode(data: np.ndarray, quantized: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` symbol indices (int64) :func:`encode` wrote into ``data``."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if quantized.size == 1:
        return np.zeros(count, dtype=np.int64)
    if data.size % 4:
        raise ValueError(f"an ANS stream is whole 32-bit words, got {data.size} bytes")
    words = np.ascontiguousarray(data, dtype=np.uint8).view("<u4").astype(np.uint32)
    coder = constriction().stream.stack.AnsCoder(words)
    return np.asarray(coder.decode(_model(quantized), count), dtype=np.int64)
