"""Bit packing: round trips, and the same bytes as the first (torch, int64-per-bit) implementation."""

from __future__ import annotations

import math

import pytest
import torch

from b2s_bench import pack_bits, pack_mask, unpack_bits, unpack_mask
from b2s_bench.compression.packing import CHUNK


# -- the first implementation, kept as the reference of the byte format --------------------------------
def reference_pack_bits(values: torch.Tensor, nbits: int) -> torch.Tensor:
    v = values.reshape(-1).to(torch.int64).cpu()
    if nbits == 8:
        return v.to(torch.uint8)
    shifts = torch.arange(nbits - 1, -1, -1, dtype=torch.int64)
    bits = ((v[:, None] >> shifts) & 1).to(torch.uint8).reshape(-1)
    pad = (-bits.numel()) % 8
    if pad:
        bits = torch.cat([bits, torch.zeros(pad, dtype=torch.uint8)])
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return (bits.reshape(-1, 8) * weights).sum(dim=1, dtype=torch.int64).to(torch.uint8)


def reference_unpack_bits(packed: torch.Tensor, nbits: int, count: int) -> torch.Tensor:
    p = packed.reshape(-1).to(torch.int64).cpu()
    if nbits == 8:
        return p[:count].clone()
    shifts = torch.arange(7, -1, -1, dtype=torch.int64)
    bits = ((p[:, None] >> shifts) & 1).reshape(-1)[: count * nbits]
    weights = 1 << torch.arange(nbits - 1, -1, -1, dtype=torch.int64)
    return (bits.reshape(count, nbits) * weights).sum(dim=1)


def _values(nbits: int, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    v = torch.randint(0, 1 << nbits, (n,), generator=gen, dtype=torch.int64)
    if n >= 2:
        v[0], v[-1] = 0, (1 << nbits) - 1  # both ends of the range
    return v


@pytest.mark.parametrize("nbits", range(1, 17))
@pytest.mark.parametrize("n", [0, 1, 7, 8, 13, 1000])
def test_same_bytes_as_the_reference(nbits: int, n: int) -> None:
    v = _values(nbits, n, seed=nbits * 1000 + n)
    packed = pack_bits(v, nbits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n * nbits / 8)
    assert torch.equal(packed, reference_pack_bits(v, nbits))
    assert torch.equal(unpack_bits(packed, nbits, n), reference_unpack_bits(packed, nbits, n))
    assert torch.equal(unpack_bits(packed, nbits, n), v)


@pytest.mark.parametrize("nbits", [1, 3, 4, 7, 12, 17, 24, 31, 32])
def test_round_trip_across_chunks(nbits: int) -> None:
    n = 2 * CHUNK + 5  # three chunks, the last one partial
    v = _values(nbits, n, seed=nbits)
    packed = pack_bits(v.reshape(1, -1), nbits)  # any shape packs row-major
    assert packed.numel() == math.ceil(n * nbits / 8)
    assert torch.equal(unpack_bits(packed, nbits, n), v)
    if nbits <= 16:
        assert torch.equal(packed, reference_pack_bits(v, nbits))


def test_unpack_reads_only_the_first_count_values() -> None:
    v = _values(5, 40, seed=1)
    assert torch.equal(unpack_bits(pack_bits(v, 5), 5, 17), v[:17])
    assert torch.equal(unpack_bits(pack_bits(v, 8), 8, 17), v[:17])


def test_unpack_returns_a_copy_at_8_bits() -> None:
    packed = pack_bits(torch.arange(10), 8).to(torch.int64)
    out = unpack_bits(packed, 8, 10)
    out[0] = 99
    assert int(packed[0]) == 0


def test_bad_values_and_widths_are_errors() -> None:
    with pytest.raises(ValueError, match="do not fit in 3 bits"):
        pack_bits(torch.tensor([8]), 3)
    with pytest.raises(ValueError, match="do not fit"):
        pack_bits(torch.tensor([-1]), 3)
    with pytest.raises(ValueError, match="nbits must be in"):
        pack_bits(torch.tensor([1]), 0)
    with pytest.raises(ValueError, match="nbits must be in"):
        unpack_bits(torch.zeros(4, dtype=torch.uint8), 33, 1)
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_bits(torch.zeros(1, dtype=torch.uint8), 3, 3)


@pytest.mark.parametrize("shape", [(0,), (1,), (3, 5, 7), (64, 9)])
def test_masks_round_trip_and_match_one_bit_packing(shape: tuple[int, ...]) -> None:
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.5
    packed = pack_mask(mask)
    assert torch.equal(packed, reference_pack_bits(mask.long(), 1))
    assert torch.equal(pack_mask(mask.to(torch.uint8)), packed)  # a 0/1 integer mask packs the same
    restored = unpack_mask(packed, shape)
    assert restored.dtype == torch.bool and torch.equal(restored, mask)
