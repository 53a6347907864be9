"""quantize's symmetric grid ranges: "full" is torchao's weight-only grid bit for bit, "restricted" the old one."""

from __future__ import annotations

import pytest
import torch
from b2s_bench_plugins.compressors.quantize import SPEC, QuantizeConfig, UniformCode, quantize_tensor
from torch import nn

from b2s_bench import ConfigError, build_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _weights() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(17)
    return [
        torch.randn(16, 40, generator=gen),
        torch.randn(8, 128, generator=gen) * 0.05,
        torch.rand(5, 33, generator=gen) - 0.3,  # skewed: the negative side is the smaller one
    ]


def _codes(code: UniformCode) -> torch.Tensor:
    return code.q.to(torch.int64).reshape(code.orig_shape[0], -1)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_full_range_is_torchaos_intx_weight_only_bit_for_bit(bits: int) -> None:
    """Linear weights through torchao's own config (IntxWeightOnlyConfig: symmetric, per output
    channel): the same integer codes and the same fp32 scales, exactly."""
    pytest.importorskip("torchao", reason="the cross-check needs torchao: pip install -e '.[crosscheck]'")
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis
    from torchao.quantization.quant_primitives import MappingType

    for w in _weights():
        layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
        layer.weight.data.copy_(w)
        ao = IntxWeightOnlyConfig(
            weight_dtype=getattr(torch, f"int{bits}"), granularity=PerAxis(0), mapping_type=MappingType.SYMMETRIC
        )
        quantize_(layer, ao)
        ours = quantize_tensor(w, QuantizeConfig(bits=bits, granularity="channel", range="full"))
        assert isinstance(ours, UniformCode)
        assert torch.equal(_codes(ours), layer.weight.qdata.to(torch.int64))
        assert torch.equal(ours.scale, layer.weight.scale.reshape(-1).float())
        assert torch.equal(ours.zero, torch.zeros(w.shape[0]))  # torchao's symmetric zero point is 0 too


def test_full_range_is_torchaos_int8_weight_only_bit_for_bit() -> None:
    """torchao's int8 weight-only config (Int8WeightOnlyConfig, per row): the same codes and scales."""
    pytest.importorskip("torchao", reason="the cross-check needs torchao: pip install -e '.[crosscheck]'")
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    for w in _weights():
        layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
        layer.weight.data.copy_(w)
        quantize_(layer, Int8WeightOnlyConfig(set_inductor_config=False))
        ours = quantize_tensor(w, QuantizeConfig(bits=8))
        assert isinstance(ours, UniformCode)
        assert torch.equal(_codes(ours), layer.weight.qdata.to(torch.int64))
        assert torch.equal(ours.scale, layer.weight.scale.reshape(-1).float())


def test_full_range_matches_torchao_on_a_conv_weight_per_output_channel() -> None:
    """A conv weight, one scale per output channel: torchao's IntxUnpackedToInt8Tensor.from_hp (the tensor
    IntxWeightOnlyConfig builds) with the block (1, C_in, kh, kw). IntxWeightOnlyConfig itself gives a
    conv weight the block (1, C_in, 1, 1), one scale per (channel, kh, kw): not a per-channel grid."""
    pytest.importorskip("torchao", reason="the cross-check needs torchao: pip install -e '.[crosscheck]'")
    from torchao.quantization.quant_primitives import MappingType
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import IntxUnpackedToInt8Tensor

    torch.manual_seed(3)
    conv = nn.Conv2d(12, 24, 3)
    nn.init.kaiming_normal_(conv.weight)
    w = conv.weight.detach()
    for bits in (4, 8):
        ao = IntxUnpackedToInt8Tensor.from_hp(w, (1, 12, 3, 3), getattr(torch, f"int{bits}"), mapping_type=MappingType.SYMMETRIC)
        ours = quantize_tensor(w, QuantizeConfig(bits=bits))
        assert isinstance(ours, UniformCode)
        assert torch.equal(_codes(ours), ao.qdata.to(torch.int64).reshape(24, -1))
        assert torch.equal(ours.scale, ao.scale.reshape(-1).float())


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_full_range_uses_the_lowest_code_and_stores_it(bits: int) -> None:
    """−max|W| maps to −(2^b − 1)/2, a tie that rounds (half to even) to −2^(b−1) where W·(1/s) is exact
    in float32 (max|W| = 0.75 at every width; with 1.0, 1/s rounds below 7.5 at 4 bits and −1 gives −7)."""
    w = torch.tensor([[-0.75, 0.2, 0.5, 0.75], [0.3, -0.1, 0.75, -0.75]])
    code = quantize_tensor(w, QuantizeConfig(bits=bits))
    assert isinstance(code, UniformCode)
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    assert code.q.min().item() == low and code.q.max().item() == high  # -max|W| lands on −2^(b−1)
    assert torch.equal(code.scale, torch.tensor([0.75, 0.75]) / ((2**bits - 1) / 2))
    back = UniformCode.restore(code.meta(), code.tensors())
    assert torch.equal(back.q, code.q) and torch.equal(back.decode(), code.decode())
    assert code.bits().payload == w.numel() * bits  # b bits a code: both ends fit the stored width


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
def test_restricted_range_reproduces_the_old_codes(bits: int, granularity: str) -> None:
    """The old grid (quantize version 3): s = max|W| / (2^(b−1) − 1), q = round(W / s), written out here."""
    for w in _weights():
        code = quantize_tensor(w, QuantizeConfig(bits=bits, granularity=granularity, group_size=16, range="restricted"))
        assert isinstance(code, UniformCode)
        if granularity == "tensor":
            g = w.reshape(1, -1)
        elif granularity == "channel":
            g = w
        else:
            pad = (-w.shape[1]) % 16
            g = torch.cat([w, w.new_zeros(w.shape[0], pad)], dim=1).reshape(-1, 16)
        scale = g.abs().amax(dim=1) / (2 ** (bits - 1) - 1)
        old = torch.clamp(torch.round(g / scale[:, None]), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        assert torch.equal(code.q, old) and torch.equal(code.scale, scale)
        assert code.q.min().item() > -(2 ** (bits - 1))  # round-to-nearest never reaches the lowest code


def test_the_hand_computed_grids() -> None:
    w = torch.tensor([[0.0, 0.3, -1.0, 0.74]])
    restricted = quantize_tensor(w, QuantizeConfig(bits=3, granularity="tensor", range="restricted"))  # s = 1/3
    assert torch.allclose(restricted.decode(), torch.tensor([[0.0, 1 / 3, -1.0, 2 / 3]]))
    # full: s = 1/3.5; 0.3·3.5 = 1.05 -> 1, 0.74·3.5 = 2.59 -> 3. The extremes sit on ties (±3.5): −1 would
    # round (half to even) to −4 on exact arithmetic, but 1/s is 3.4999998 in float32, so −1 gives −3
    # here, as it does in torchao; +max|W| always clips half a step (3.5 -> 3).
    full = quantize_tensor(w, QuantizeConfig(bits=3, granularity="tensor"))
    assert torch.equal(full.q, torch.tensor([[0.0, 1.0, -3.0, 3.0]]))
    assert torch.allclose(full.decode(), torch.tensor([[0.0, 1.0, -3.0, 3.0]]) / 3.5)
    four = quantize_tensor(torch.tensor([[-0.75, 0.2, 0.75]]), QuantizeConfig(bits=4, granularity="tensor"))  # s = 0.1
    assert torch.equal(four.q, torch.tensor([[-8.0, 2.0, 7.0]]))  # −7.5 -> −8 (half to even), 7.5 -> 8 -> clipped to 7


def test_full_range_has_less_error_on_gaussian_weights_at_4_bits() -> None:
    w = torch.randn(64, 288, generator=torch.Generator().manual_seed(0))
    err = {
        r: float(((quantize_tensor(w, QuantizeConfig(bits=4, range=r)).decode() - w) ** 2).sum()) for r in ("full", "restricted")
    }
    assert err["full"] < err["restricted"]


def test_range_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="range") as bad:
        build_config(SPEC.config, {"range": "half"}, owner="quantize")
    assert bad.value.key == "range"
    with pytest.raises(ConfigError, match="symmetric: true") as affine:
        build_config(SPEC.config, {"range": "restricted", "symmetric": False}, owner="quantize")
    assert affine.value.key == "range"
    assert build_config(SPEC.config, {}, owner="quantize").range == "full"
    assert SPEC.version == "4"
