"""Exact size accounting: hand-computed cases, the fp32 baseline, both ratios, packing."""

from __future__ import annotations

import pytest
import torch
from b2s_bench_plugins.compressors.prune import SparseCode, magnitude_masks, sparse_code
from b2s_bench_plugins.compressors.quantize import QuantizeConfig, quantize_tensor
from torch import nn

from b2s_bench import Compressed, SizeBreakdown
from b2s_bench.compression.packing import pack_bits, pack_mask, unpack_bits, unpack_mask
from b2s_bench.compression.sizes import ceil_log2, inference_state, sparse_index_bits
from b2s_bench.testing import tiny_model


def test_breakdown_arithmetic_and_validation() -> None:
    a = SizeBreakdown(payload=10, scales=2)
    b = SizeBreakdown(indices=5, raw=3)
    assert (a + b).total == 20 and SizeBreakdown.sum([a, b, a]).payload == 20
    with pytest.raises(ValueError, match="non-negative int"):
        SizeBreakdown(payload=-1)
    with pytest.raises(ValueError):
        SizeBreakdown(payload=1.5)  # type: ignore[arg-type]


def test_baseline_counts_bn_buffers_but_not_num_batches_tracked() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    state = inference_state(model)
    assert "1.num_batches_tracked" not in state
    # conv 36 + 4 bias; BN weight, bias, running mean, running var: 16
    assert Compressed.from_codes(model, {}).size().baseline_bits == 32 * (36 + 4 + 16)


def test_quantize_bits_hand_computed() -> None:
    w = torch.randn(16, 8, 3, 3)
    sym = quantize_tensor(w, QuantizeConfig(bits=4, granularity="channel"))
    assert sym.bits().as_dict() == {
        "payload": 1152 * 4,
        "scales": 16 * 32,
        "indices": 0,
        "codebook": 0,
        "inr": 0,
        "outliers": 0,
        "metadata": 320,
        "raw": 0,
    }  # header: 4 fields, 4+2 dims
    affine = quantize_tensor(w, QuantizeConfig(bits=4, granularity="group", group_size=32, symmetric=False, scale_bits=16))
    groups = 16 * 3  # 72 weights per row -> 3 groups of 32 (padded)
    assert affine.bits().total == 16 * 96 * 4 + groups * (16 + 4) + 320  # the 24 padding codes a row count
    assert quantize_tensor(w, QuantizeConfig(bits=32)).bits().payload == 32 * 1152


def test_quantize_values_are_round_to_nearest() -> None:
    w = torch.tensor([[0.0, 0.3, -1.0, 0.74]])
    code = quantize_tensor(w, QuantizeConfig(bits=3, granularity="tensor", range="restricted"))  # s = 1/3, grid -4..3
    assert torch.allclose(code.decode(), torch.tensor([[0.0, 1 / 3, -1.0, 2 / 3]]))
    affine = quantize_tensor(w, QuantizeConfig(bits=2, granularity="tensor", symmetric=False))
    assert affine.decode().unique().numel() <= 4


def test_prune_bits_are_the_cheaper_index_encoding() -> None:
    assert sparse_index_bits(10, 4, 100) == (10 * 7 + 5 * 4, "csr")
    assert sparse_index_bits(300, 4, 100) == (400, "bitmask")
    w = torch.randn(64, 576)
    mask = magnitude_masks({"w": w}, 0.9, "layer")["w"]
    code = SparseCode(w[mask], mask)
    nnz = int(mask.sum())
    assert nnz == 64 * 576 - round(0.9 * 64 * 576)
    csr = nnz * ceil_log2(576) + 65 * ceil_log2(nnz + 1)
    assert code.bits().as_dict()["indices"] == min(csr, 64 * 576)
    assert code.bits().payload == 32 * nnz


@pytest.mark.parametrize("sparsity", [0.0, 0.02])
def test_low_sparsity_is_stored_dense_and_never_bigger_than_fp32(sparsity: float) -> None:
    w = torch.randn(16, 48, generator=torch.Generator().manual_seed(0))
    mask = magnitude_masks({"w": w}, sparsity, "layer")["w"]
    code = sparse_code(w, mask)
    assert code.encoding == "dense" and code.bits().as_dict()["indices"] == 0
    assert code.bits().total == 32 * w.numel() + 3 * 32  # the values, zeros included; header: 2 dims, nnz
    assert torch.equal(code.decode(), w * mask)
    assert code.kept == int(mask.sum()) and code.stats()["sparsity"] == pytest.approx(sparsity, abs=1e-3)
    back = SparseCode.restore(code.meta(), code.tensors())
    assert torch.equal(back.decode(), code.decode()) and back.encoding == "dense"


def test_sparse_code_switches_to_sparse_where_it_pays() -> None:
    w = torch.randn(16, 48, generator=torch.Generator().manual_seed(0))
    mask = magnitude_masks({"w": w}, 0.5, "layer")["w"]
    code = sparse_code(w, mask)
    assert code.encoding == "bitmask" and code.bits().total == 32 * 384 + 768 + 3 * 32 < 32 * 768


def test_both_ratios() -> None:
    model = tiny_model()
    state = model.state_dict()
    key = "classifier.1.weight"
    code = quantize_tensor(state[key], QuantizeConfig(bits=8, granularity="tensor"))
    size = Compressed.from_codes(model, {key: code}).size()
    n = state[key].numel()
    assert size.layers_baseline_bits == 32 * n
    header = 32 * (4 + 2 + 2)  # nbits, symmetric, scale_bits, pad; the 2-d shape; the 2-d code layout
    assert size.layers_bits == code.bits().total == 8 * n + 32 + header
    assert size.ratio_layers == pytest.approx(32 * n / (8 * n + 32 + header))
    assert size.ratio_model == pytest.approx(size.baseline_bits / size.total_bits)
    assert size.total_bits == size.baseline_bits - 32 * n + 8 * n + 32 + header


@pytest.mark.parametrize("nbits", [1, 2, 3, 5, 8, 13])
def test_packing_round_trip(nbits: int) -> None:
    values = torch.randint(0, 2**nbits, (1001,))
    packed = pack_bits(values, nbits)
    assert packed.dtype == torch.uint8 and packed.numel() == (1001 * nbits + 7) // 8
    assert torch.equal(unpack_bits(packed, nbits, 1001), values)
    mask = torch.rand(7, 9) > 0.5
    assert torch.equal(unpack_mask(pack_mask(mask), (7, 9)), mask)
    with pytest.raises(ValueError, match="do not fit"):
        pack_bits(torch.tensor([2**nbits]), nbits)


def test_header_bits_counts_every_field_and_dimension() -> None:
    from b2s_bench import header_bits

    assert header_bits({"shape": [64, 3, 3, 3], "nbits": 4}) == 5 * 32  # 4 dims and one field
    assert header_bits({}) == 0 and header_bits({"a": None, "b": True}) == 64
    assert header_bits({"x": 0.5}) == 32 and header_bits({"x": 0.1}) == 64  # fp32 value, else a double
    assert header_bits({"mode": "none"}) == 32 and header_bits({"mode": "crossfilter"}) == 96  # 4-byte words
    assert header_bits({"outer": {"ranks": [4, 4]}, "inner": [{"n": 1}]}) == 96  # nested values count
    with pytest.raises(TypeError, match="int\\(x\\)"):
        header_bits({"t": torch.zeros(2)})


def test_padded_groups_pads_only_the_last_group() -> None:
    from b2s_bench import padded_groups

    assert padded_groups(72, 32) == (3, 24) and padded_groups(64, 32) == (2, 0) and padded_groups(0, 8) == (0, 0)
    with pytest.raises(ValueError, match="group >= 1"):
        padded_groups(10, 0)
    # quantize follows the rule: a row of 72 weights in groups of 32 stores 3 x 32 codes and counts them
    w = torch.randn(2, 72)
    code = quantize_tensor(w, QuantizeConfig(bits=4, granularity="group", group_size=32))
    groups, pad = padded_groups(72, 32)
    assert code.pad == pad and code.bits().payload == 2 * groups * 32 * 4


@pytest.mark.parametrize("shape", [(6, 5), (7, 1), (1, 9)])
@pytest.mark.parametrize("kept", [0, 1, 3])
def test_sparse_positions_store_no_more_than_they_count(shape: tuple[int, int], kept: int) -> None:
    """Every pruned, or a one-column matrix: CSR counts no column indices and no row pointers for nothing
    kept; the stored tensors must hold no more (they held rows + 1 bits, or a bit a kept weight)."""
    from b2s_bench.compression.contract import serialized_bytes

    w = torch.arange(1, shape[0] * shape[1] + 1, dtype=torch.float32).reshape(shape)
    mask = torch.zeros(shape, dtype=torch.bool)
    mask.view(-1)[:kept] = True
    code = SparseCode(w[mask], mask)
    bits = code.bits()
    positions = {k: v for k, v in code.tensors().items() if k != "values"}
    assert 8 * serialized_bytes(positions) < bits.indices + 8 * max(len(positions), 1)  # at most the last byte's padding
    back = SparseCode.restore(code.meta(), code.tensors())
    assert torch.equal(back.mask, mask) and torch.equal(back.decode(), code.decode())
