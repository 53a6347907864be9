"""hqq: the contract, HQQ's defining property (its zero points do not raise the lp error it minimises,
nor the MSE, above round-to-nearest's on the same grid, on heavy-tailed weights), the layouts and the
stored bits, bad settings named, and (slow) the codes against the hqq package's ``Quantizer.quantize``.

The cross-check needs hqq (``pip install --no-deps hqq==0.2.8.post1 termcolor``: its quantizer needs only
torch and termcolor; the package's own dependencies, transformers and accelerate, are not used here).
Agreement found: with ``kappa: 1`` (hqq's default solver keeps β fixed) codes, scales and zero points are
bit-identical for 2, 3, 4 and 8 bits on both axes; with the paper's κ = 1.01 (the default) the codes on
these tensors came out identical too (the early stop ends before β has grown enough to move a code; the
test allows 1 % of the codes to differ and 0.1 % of lp error).
"""

from __future__ import annotations

import pytest
import torch
from b2s_bench_plugins.compressors.hqq import SPEC, HQQCode, HQQConfig, group_view, hqq_groups, hqq_tensor, lp_error
from b2s_bench_plugins.compressors.quantize import QuantizeConfig, quantize_tensor

import b2s_bench as b2s
from b2s_bench.compression.contract import check_storage, symbol_problems
from b2s_bench.testing import check_compressor

pytestmark = pytest.mark.usefixtures("one_thread")


def heavy_tailed(seed: int, shape: tuple[int, int] = (64, 256)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    normal = torch.randn(shape, generator=gen)
    chi2 = torch.randn((3, *shape), generator=gen).pow(2).sum(0)  # Student's t with 3 degrees of freedom
    return 0.02 * normal / (chi2 / 3).sqrt()


@pytest.mark.parametrize("settings", [{}, {"bits": 3, "axis": 0, "scale_bits": 32}, {"optimize_scale": True}])
def test_contract(settings: dict[str, object]) -> None:
    report = check_compressor(SPEC, settings)
    assert report.bits > 0


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_hqq_error_is_not_above_round_to_nearest_on_the_same_grid(bits: int) -> None:
    for seed in range(5):
        w = heavy_tailed(seed)
        g, _ = group_view(w, 64, 1)
        config = HQQConfig(bits=bits, scale_bits=32)
        q, s, z, ran = hqq_groups(g, config)
        q0, s0, z0, none = hqq_groups(g, HQQConfig(bits=bits, iterations=0, scale_bits=32))  # the same start
        assert ran >= 2 and none == 0 and torch.equal(s, s0)  # the scale stays: only the zero point moves
        hqq, rtn = s[:, None] * (q - z[:, None]), s0[:, None] * (q0 - z0[:, None])
        assert lp_error(g, hqq, 0.7) < lp_error(g, rtn, 0.7), (seed, bits)
        assert float((g - hqq).pow(2).mean()) <= float((g - rtn).pow(2).mean()), (seed, bits)


def test_hqq_beats_quantizes_affine_round_to_nearest_at_4_bits() -> None:
    for seed in range(5):
        w = heavy_tailed(seed)
        hqq = hqq_tensor(w, HQQConfig(scale_bits=32)).decode()
        rtn = quantize_tensor(w, QuantizeConfig(bits=4, granularity="group", group_size=64, symmetric=False)).decode()
        assert lp_error(w, hqq, 0.7) < lp_error(w, rtn, 0.7)
        assert float((w - hqq).pow(2).mean()) < float((w - rtn).pow(2).mean())


@pytest.mark.parametrize("axis", [0, 1])
def test_layouts_pad_decode_and_count_every_bit(axis: int) -> None:
    w = heavy_tailed(7, (10, 100))  # 1000 weights: neither a row nor the tensor divides by 64
    code = hqq_tensor(w, HQQConfig(axis=axis))
    assert isinstance(code, HQQCode) and code.decode().shape == w.shape
    groups = code.scale.numel()
    assert code.q.shape == (groups, 64) and code.pad == (28 if axis == 1 else 24)
    assert groups == (20 if axis == 1 else 16)
    bits = code.bits()
    assert bits.payload == groups * 64 * 4 and bits.scales == groups * 2 * 16
    assert bits.metadata == b2s.header_bits(code.meta())
    check_storage({"w": code})
    assert symbol_problems("w", code) == []
    again = HQQCode.restore(code.meta(), code.tensors())
    assert torch.equal(again.decode(), code.decode())
    assert float((code.decode() - w).abs().max()) < float(w.abs().max()) / 2  # a fit, not noise


def test_bad_settings_name_their_key() -> None:
    for key, value in {"bits": 9, "axis": 2, "lp_norm": 1.5, "kappa": 0.5, "beta": 0, "round_zero": "maybe"}.items():
        with pytest.raises(b2s.ConfigError, match=key):
            b2s.build_config(HQQConfig, {key: value}, owner="hqq")


@pytest.mark.slow
@pytest.mark.parametrize("axis", [0, 1])
def test_codes_equal_the_hqq_packages(axis: int) -> None:
    quantizer = pytest.importorskip("hqq.core.quantize").Quantizer
    for bits in (2, 3, 4, 8):
        w = heavy_tailed(bits, (128, 256))
        theirs, meta = quantizer.quantize(
            w, nbits=bits, group_size=64, axis=axis, device="cpu", bitpack=False, round_zero=bits == 4
        )
        g, _ = group_view(w, 64, axis)
        q, scale, zero, _ = hqq_groups(g, HQQConfig(bits=bits, axis=axis, kappa=1.0))
        as_groups = theirs.reshape(-1, 64) if axis == 1 else theirs.reshape(64, -1).t()
        assert torch.equal(q, as_groups), (bits, axis)
        assert torch.equal(zero, meta["zero"].reshape(-1)) and torch.equal(scale, meta["scale"].reshape(-1))
        # the paper's κ = 1.01 (beta grows): at most 1 % of the codes differ, the lp error within 0.1 %
        q2, s2, z2, _ = hqq_groups(g, HQQConfig(bits=bits, axis=axis))
        ours = s2[:, None] * (q2 - z2[:, None])
        ref = meta["scale"].reshape(-1)[:, None] * (as_groups - meta["zero"].reshape(-1)[:, None])
        assert float((q2 != as_groups).float().mean()) < 0.01
        assert abs(lp_error(g, ours, 0.7) / lp_error(g, ref, 0.7) - 1) < 1e-3
