"""Bit packing, so that the bytes of an artifact match the counted bits (to within a byte a tensor).

The format: each value's ``nbits`` bits, most significant first, concatenated in order, and the
last byte padded with zero bits. Packing goes through numpy's ``packbits``/``unpackbits`` a chunk
of values at a time, so the memory it needs stays small (about 32 bytes a value of one chunk)
however many values there are: EfficientNet-Lite0 at 4 bits packs in a few MB, not ~150 MB of
int64 bits.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["pack_bits", "unpack_bits", "pack_mask", "unpack_mask"]

#: values per chunk; a multiple of 8, so that every chunk but the last packs to whole bytes
CHUNK = 1 << 16


def _check_nbits(nbits: int) -> None:
    if not 1 <= nbits <= 32:
        raise ValueError(f"nbits must be in [1, 32], got {nbits}")


def _word(nbits: int) -> np.dtype:
    """The big-endian unsigned word that holds ``nbits`` bits (1, 2 or 4 bytes)."""
    return np.dtype(">u1" if nbits <= 8 else ">u2" if nbits <= 16 else ">u4")


def pack_bits(values: torch.Tensor, nbits: int) -> torch.Tensor:
    """Pack non-negative integers below 2**nbits into a uint8 tensor of ceil(n*nbits/8) bytes.

    Args:
        values: integers of any shape (flattened in row-major order).
        nbits: bits per value, 1 to 32.

    Returns:
        The packed bytes, MSB first (see the module docstring).

    Raises:
        ValueError: ``nbits`` is out of range or a value does not fit in it.
    """
    _check_nbits(nbits)
    v = values.detach().reshape(-1).to(torch.int64).cpu()
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= (1 << nbits)):
        raise ValueError(f"values do not fit in {nbits} bits: range [{int(v.min())}, {int(v.max())}]")
    if nbits == 8:  # byte-aligned: the bytes are the values
        return v.to(torch.uint8)
    word = _word(nbits)
    skip = 8 * word.itemsize - nbits  # the word's leading zero bits
    flat = v.numpy()
    out = np.empty(math.ceil(flat.size * nbits / 8), dtype=np.uint8)
    for start in range(0, flat.size, CHUNK):
        words = flat[start : start + CHUNK].astype(word)
        bits = np.unpackbits(words.view(np.uint8)).reshape(-1, 8 * word.itemsize)[:, skip:]
        packed = np.packbits(bits.reshape(-1))
        first = start * nbits // 8
        out[first : first + packed.size] = packed
    return torch.from_numpy(out)


def unpack_bits(packed: torch.Tensor, nbits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``count`` integers, as int64.

    Raises:
        ValueError: ``nbits`` is out of range or ``packed`` holds fewer than ``count`` values.
    """
    _check_nbits(nbits)
    p = packed.detach().reshape(-1).cpu()
    if p.numel() * 8 < count * nbits:
        raise ValueError(f"{p.numel()} bytes cannot hold {count} values of {nbits} bits")
    if nbits == 8:
        return p[:count].to(torch.int64, copy=True)
    data = p.to(torch.uint8).numpy()
    word = _word(nbits)
    skip = 8 * word.itemsize - nbits
    out = np.empty(count, dtype=np.int64)
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        first = start * nbits // 8
        bits = np.unpackbits(data[first : first + math.ceil(n * nbits / 8)], count=n * nbits).reshape(n, nbits)
        full = np.zeros((n, 8 * word.itemsize), dtype=np.uint8)
        full[:, skip:] = bits
        out[start : start + n] = np.packbits(full.reshape(-1)).view(word)  # flat: much faster than axis=1
    return torch.from_numpy(out)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A mask as one bit per entry (row-major), padded to a byte: ``pack_bits(mask, 1)``."""
    if mask.dtype != torch.bool:
        return pack_bits(mask.reshape(-1).to(torch.int64), 1)
    return torch.from_numpy(np.packbits(mask.detach().reshape(-1).cpu().numpy()))  # no int64 copy


def unpack_mask(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_mask`: a boolean tensor of ``shape``."""
    n = math.prod(shape)
    data = packed.detach().reshape(-1).cpu().to(torch.uint8).numpy()
    if data.size * 8 < n:
        raise ValueError(f"{data.size} bytes cannot hold a mask of {n} entries")
    return torch.from_numpy(np.unpackbits(data, count=n).astype(bool)).reshape(shape)
