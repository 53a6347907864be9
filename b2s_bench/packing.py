"""Bit packing, so that the bytes of an artifact match the counted bits (to within a byte a tensor)."""

from __future__ import annotations

import torch

__all__ = ["pack_bits", "unpack_bits", "pack_mask", "unpack_mask"]


def pack_bits(values: torch.Tensor, nbits: int) -> torch.Tensor:
    """Pack non-negative integers below 2**nbits into a uint8 tensor of ceil(n*nbits/8) bytes."""
    if not 1 <= nbits <= 32:
        raise ValueError(f"nbits must be in [1, 32], got {nbits}")
    v = values.reshape(-1).to(torch.int64).cpu()
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= (1 << nbits)):
        raise ValueError(f"values do not fit in {nbits} bits: range [{int(v.min())}, {int(v.max())}]")
    if nbits == 8:  # byte-aligned: the bytes are the values
        return v.to(torch.uint8)
    shifts = torch.arange(nbits - 1, -1, -1, dtype=torch.int64)
    bits = ((v[:, None] >> shifts) & 1).to(torch.uint8).reshape(-1)
    pad = (-bits.numel()) % 8
    if pad:
        bits = torch.cat([bits, torch.zeros(pad, dtype=torch.uint8)])
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return (bits.reshape(-1, 8) * weights).sum(dim=1, dtype=torch.int64).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, nbits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``count`` integers, as int64."""
    p = packed.reshape(-1).to(torch.int64).cpu()
    if nbits == 8:
        return p[:count].clone()
    shifts = torch.arange(7, -1, -1, dtype=torch.int64)
    bits = ((p[:, None] >> shifts) & 1).reshape(-1)[: count * nbits]
    weights = 1 << torch.arange(nbits - 1, -1, -1, dtype=torch.int64)
    return (bits.reshape(count, nbits) * weights).sum(dim=1)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    return pack_bits(mask.reshape(-1).to(torch.int64), 1)


def unpack_mask(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    n = 1
    for s in shape:
        n *= s
    return unpack_bits(packed, 1, n).bool().reshape(shape)
