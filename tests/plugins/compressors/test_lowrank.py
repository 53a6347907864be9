"""lowrank: truncated SVD / Tucker-2 codes, exact bits, deployed forms, identity and the solver."""

from __future__ import annotations

import b2s_bench_plugins.compressors.lowrank as lowrank
import b2s_bench_plugins.compressors.quantize as quantize
import pytest
import torch
from b2s_bench_plugins.compressors.lowrank import SPEC, DenseCode, LowRankConfig, SvdCode, TuckerCode
from torch import nn

from b2s_bench import Compressed, ConfigError, Context, SizeBreakdown, build_config
from b2s_bench.execution import load_plugins
from b2s_bench.execution.cell import NestedCode, apply_stage
from b2s_bench.fitting.solve import fit_network, relative_error
from b2s_bench.testing import check_compressor, tiny_context, tiny_model

CODE_TYPES = {c.kind: c for c in SPEC.codes}


def _compress(model: nn.Module, **settings: object) -> Compressed:
    return SPEC.compress(model, build_config(LowRankConfig, settings, "lowrank"), Context())


def _spectrum_matrix(m: int, n: int, seed: int = 0) -> torch.Tensor:
    """A matrix with a decaying spectrum (like trained weights)."""
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    u, _ = torch.linalg.qr(torch.randn(m, k, generator=g))
    v, _ = torch.linalg.qr(torch.randn(n, k, generator=g))
    return (u * torch.logspace(0, -2, k)) @ v.T


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(8, 24, 3, stride=2, padding=1, dilation=1, bias=True)
        self.b = nn.Conv2d(24, 24, 3, padding=2, dilation=2, bias=False)
        self.dw = nn.Conv2d(24, 24, 3, padding=1, groups=24)
        self.pw = nn.Conv2d(24, 32, 1)
        self.fc = nn.Linear(32, 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b(torch.relu(self.a(x))))
        x = self.pw(self.dw(x)).mean(dim=(2, 3))
        return self.fc(x)


def test_registered_through_the_plugin_hook() -> None:
    plugins = load_plugins(entry_points=False, extra=[("lowrank", lowrank)])
    assert plugins.compressors.get("lowrank") is SPEC


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"rank": 4},
        {"method": "tucker2", "rank": 4},
        {"method": "tucker2", "target_ratio": 3.0, "hooi_iters": 2},
        {"target_ratio": 5.0},
        {"rank": 2, "skip_first": True, "skip_last": True},
    ],
)
def test_contract(settings: dict) -> None:
    report = check_compressor(SPEC, settings)
    assert report.identity_max_error == 0.0


def test_bits_hand_computed_and_break_even() -> None:
    w = _spectrum_matrix(64, 576)
    code = lowrank.svd_code(w, LowRankConfig(rank=8))
    assert isinstance(code, SvdCode) and code.rank == 8
    assert code.bits().payload == 8 * (64 + 576) * 32 == 163_840
    assert code.bits().metadata == 3 * 32 and code.bits().total == 163_936  # header: 2 dims and the rank
    stored = sum(t.numel() * t.element_size() * 8 for t in code.tensors().values())
    assert stored == code.bits().payload  # the artifact stores exactly the counted factors
    # break-even: r (m + n) + 3 header words >= m n (36,864): rank 57 still pays off, rank 58 does not
    assert isinstance(lowrank.svd_code(w, LowRankConfig(rank=57)), SvdCode)
    dense = lowrank.svd_code(w, LowRankConfig(rank=58))
    assert isinstance(dense, DenseCode)
    assert dense.bits().total == 32 * 64 * 576 and torch.equal(dense.decode(), w)
    # a conv 64 -> 64, 3x3 is the same 64 x 576 matrix
    conv = lowrank.svd_code(w.reshape(64, 64, 3, 3), LowRankConfig(rank=8))
    assert conv.bits() == code.bits() + SizeBreakdown(metadata=2 * 32) and conv.shape == (64, 64, 3, 3)  # 4 dims


def test_tucker_bits_and_break_even() -> None:
    w = torch.randn(32, 16, 3, 3, generator=torch.Generator().manual_seed(0))
    code = lowrank.tucker_code(w, LowRankConfig(method="tucker2", rank=4))
    assert isinstance(code, TuckerCode) and code.shape == (32, 16, 3, 3)
    assert code.bits().payload == 32 * (16 * 4 + 4 * 4 * 9 + 4 * 32) and code.bits().metadata == 6 * 32
    # 16 -> 16, 3x3: C_in R + R² k² + R C_out + 3 >= C_out C_in k² (2304) from R = 15 on (2508): dense
    w = w[:16]
    assert isinstance(lowrank.tucker_code(w, LowRankConfig(method="tucker2", rank=14)), TuckerCode)  # 2215
    assert isinstance(lowrank.tucker_code(w, LowRankConfig(method="tucker2", rank=15)), DenseCode)


def test_model_bits_add_up_and_targeted_layers_are_replaced() -> None:
    model = ConvNet()
    comp = _compress(model, rank=4)
    assert "dw.weight" not in comp.codes and "dw.weight" in comp.raw  # depthwise stays raw, untargeted
    assert set(comp.codes) == {"a.weight", "b.weight", "pw.weight", "fc.weight"}
    size = comp.size()
    code_bits = sum(c.bits().total for c in comp.codes.values())
    raw_bits = sum(32 * t.numel() for t in comp.raw.values())
    assert size.total_bits == code_bits + raw_bits
    expected = {"a.weight": 4 * (24 + 72), "b.weight": 4 * (24 + 216), "pw.weight": 4 * (32 + 24), "fc.weight": 4 * (20 + 32)}
    for key, words in expected.items():
        header = 32 * (model.state_dict()[key].dim() + 1)  # the shape and the rank
        assert comp.codes[key].bits().total == 32 * words + header, key
    assert size.layers_baseline_bits == 32 * sum(model.state_dict()[k].numel() for k in expected)


def test_rank_rules() -> None:
    sigma = torch.tensor([3.0, 2.0, 1.0, 0.5])  # energies 9, 4, 1, 0.25 of 14.25
    assert lowrank.energy_rank(sigma, 9 / 14.25) == 1
    assert lowrank.energy_rank(sigma, 0.7) == 2
    assert lowrank.energy_rank(sigma, 0.99) == 4
    assert lowrank.energy_rank(sigma, 1.0) == 4
    w = _spectrum_matrix(64, 576)
    for ratio in (2.0, 5.0, 20.0):
        code = lowrank.svd_code(w, LowRankConfig(target_ratio=ratio))
        assert 32 * w.numel() / code.bits().total >= ratio
        bigger = lowrank.svd_code(w, LowRankConfig(rank=code.rank + 1))
        assert 32 * w.numel() / bigger.bits().total < ratio  # the largest rank within the budget
    code = lowrank.svd_code(w, LowRankConfig(energy=0.9))
    s = torch.linalg.svdvals(w.double())
    r = code.rank
    assert (s[:r] ** 2).sum() / (s**2).sum() >= 0.9 > (s[: r - 1] ** 2).sum() / (s**2).sum()
    t = lowrank.tucker_code(torch.randn(32, 16, 3, 3), LowRankConfig(method="tucker2", target_ratio=4.0))
    assert 32 * 32 * 16 * 9 / t.bits().total >= 4.0


def test_default_rule_is_energy() -> None:
    assert LowRankConfig().energy == lowrank.DEFAULT_ENERGY
    assert LowRankConfig(rank=3).energy is None


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"rank": 0}, "rank must be >= 1, got 0"),
        ({"energy": 1.5}, "energy must be in (0, 1], got 1.5"),
        ({"energy": 0.0}, "energy must be in (0, 1], got 0.0"),
        ({"target_ratio": 0.5}, "target_ratio must be >= 1, got 0.5"),
        ({"rank": 4, "energy": 0.9}, "set only one of rank, energy, target_ratio"),
        ({"hooi_iters": -1}, "hooi_iters must be >= 0, got -1"),
        ({"min_numel": -5}, "min_numel must be >= 0, got -5"),
        ({"method": "tuker2"}, "did you mean 'tucker2'"),
        ({"rnak": 4}, "did you mean 'rank'"),
    ],
)
def test_bad_settings(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as e:
        build_config(LowRankConfig, settings, "lowrank")
    assert message in str(e.value)


@pytest.mark.parametrize("settings", [{"energy": 1.0}, {"rank": 10_000}, {"method": "tucker2", "energy": 1.0}])
def test_identity_reproduces_the_dense_model(settings: dict) -> None:
    model = tiny_model(0)
    x = torch.randn(4, 1, 28, 28)
    comp = _compress(model, **settings)
    assert all(isinstance(c, DenseCode) for c in comp.codes.values())
    with torch.no_grad():
        assert torch.equal(comp.module()(x), model(x))
    assert comp.size().total_bits == comp.size().baseline_bits


@pytest.mark.parametrize("settings", [{"rank": 3}, {"method": "tucker2", "rank": 3}, {"energy": 0.8}])
def test_deployed_form_equals_decoded_dense(settings: dict, tmp_path) -> None:
    torch.manual_seed(0)
    model = ConvNet().eval()
    comp = _compress(model, **settings)
    x = torch.randn(2, 8, 17, 17)
    deployed = comp.module(deployed=True)
    assert isinstance(deployed.a, nn.Sequential) and isinstance(deployed.fc, nn.Sequential)
    assert isinstance(deployed.dw, nn.Conv2d)
    expected_len = 3 if settings.get("method") == "tucker2" else 2
    assert len(deployed.a) == expected_len and len(deployed.fc) == 2  # linear layers always use SVD
    with torch.no_grad():
        dense_out = comp.module()(x)
        torch.testing.assert_close(deployed(x), dense_out, rtol=1e-4, atol=1e-5)
    # the deployed layers hold exactly the stored factors: as many parameters as the codes count
    n_params = sum(
        p.numel()
        for name, p in deployed.named_parameters()
        if name.split(".")[0] in {"a", "b", "pw", "fc"} and not name.endswith("bias")
    )
    assert 32 * n_params == sum(c.bits().payload for c in comp.codes.values())
    comp.save(tmp_path / "artifact")
    loaded = Compressed.load(tmp_path / "artifact", comp.skeleton, CODE_TYPES)
    with torch.no_grad():
        assert torch.equal(loaded.module(deployed=True)(x), deployed(x))


def test_deployed_keeps_same_padding_and_input_hooks() -> None:
    """timm's Conv2dSame (TF 'SAME' padding, as in EfficientNet) and simulated activation quantization."""
    from timm.layers import Conv2dSame

    torch.manual_seed(1)
    model = nn.Sequential(Conv2dSame(6, 16, 3, stride=2), nn.ReLU(), Conv2dSame(16, 16, 5)).eval()
    comp = _compress(model, rank=3)
    comp = Compressed(
        comp.codes,
        comp.raw,
        comp.skeleton,
        comp.original_shapes,
        activations={"0": (-2.0, 2.0), "2": (0.0, 3.0)},
        activation_bits=4,
    )
    x = torch.randn(2, 6, 15, 16)
    deployed = comp.module(deployed=True)
    assert isinstance(deployed[0], nn.Sequential) and isinstance(deployed[0][0], Conv2dSame)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), comp.module()(x), rtol=1e-4, atol=1e-5)
    comp = _compress(model, method="tucker2", rank=3)
    with torch.no_grad():
        torch.testing.assert_close(comp.module(deployed=True)(x), comp.module()(x), rtol=1e-4, atol=1e-5)


def test_save_load_round_trip(tmp_path) -> None:
    comp = _compress(ConvNet(), method="tucker2", rank=5)
    disk = comp.save(tmp_path / "a")
    loaded = Compressed.load(tmp_path / "a", comp.skeleton, CODE_TYPES)
    assert {k: type(c) for k, c in loaded.codes.items()} == {k: type(c) for k, c in comp.codes.items()}
    for key, code in comp.codes.items():
        assert torch.equal(loaded.codes[key].decode(), code.decode())
    assert loaded.size() == comp.size()
    assert disk * 8 >= comp.size().total_bits


@pytest.mark.parametrize("shape, rank", [((16, 1, 3, 3), 2), ((10, 64), 3)])
def test_solver_reaches_the_truncated_svd(shape: tuple, rank: int, one_thread: None) -> None:
    """Eckart–Young, reached by gradient descent on the bottleneck network from a random start."""
    m = shape[0]
    w = _spectrum_matrix(m, int(torch.tensor(shape[1:]).prod()), seed=1).reshape(shape).float()
    code = lowrank.svd_code(w, LowRankConfig(rank=rank))
    closed = relative_error(code.decode(), w)
    net = code.as_network("random", torch.Generator().manual_seed(0))
    assert net.projection == "never" and net.solver_lam == 0.0
    before = relative_error(net(), w)
    result = fit_network(net, w, steps=1500, lr=0.1)
    assert before > 0.9 and result.rel_error <= closed * (1 + 1e-4)


def test_network_form_at_the_code_is_the_code() -> None:
    w = _spectrum_matrix(24, 40)
    code = lowrank.svd_code(w, LowRankConfig(rank=5))
    net = code.as_network("code")
    torch.testing.assert_close(net(), code.decode())
    # at the balanced √Σ split, ½(||A||² + ||B||²) is the nuclear norm of the decoded matrix
    torch.testing.assert_close(code.regularizer(), torch.linalg.matrix_norm(code.decode(), "nuc"), rtol=1e-4, atol=1e-5)
    tucker = lowrank.tucker_code(torch.randn(8, 6, 3, 3), LowRankConfig(method="tucker2", rank=3))
    torch.testing.assert_close(tucker.as_network("code")(), tucker.decode())


def test_hooi_does_not_increase_the_error() -> None:
    w = torch.randn(24, 16, 3, 3, generator=torch.Generator().manual_seed(3))
    hosvd = lowrank.tucker_code(w, LowRankConfig(method="tucker2", rank=6))
    hooi = lowrank.tucker_code(w, LowRankConfig(method="tucker2", rank=6, hooi_iters=3))
    assert relative_error(hooi.decode(), w) <= relative_error(hosvd.decode(), w) + 1e-6


def test_pipeline_quantizes_the_factors() -> None:
    comp = _compress(tiny_model(0), rank=4)
    qconfig = build_config(quantize.QuantizeConfig, {"bits": 8})
    staged = apply_stage(comp, quantize.SPEC, qconfig, tiny_context(0))
    nested = staged.codes["features.4.weight"]
    assert isinstance(nested, NestedCode) and set(nested.inner) == {"a", "b"}
    outer = comp.codes["features.4.weight"]
    assert nested.bits().payload == (outer.a.numel() + outer.b.numel()) * 8
    assert relative_error(nested.decode(), outer.decode()) < 0.02
    assert staged.size().total_bits < comp.size().total_bits


def test_compress_tensor_keeps_vectors_dense() -> None:
    v = torch.randn(50)
    code = SPEC.compress_tensor("x/values", v, LowRankConfig(rank=2), Context())
    assert isinstance(code, DenseCode) and torch.equal(code.decode(), v)
    m = SPEC.compress_tensor("x/w", _spectrum_matrix(30, 40), LowRankConfig(rank=2), Context())
    assert isinstance(m, SvdCode) and m.rank == 2


def test_min_numel_leaves_small_layers_raw() -> None:
    comp = _compress(tiny_model(0), rank=2, min_numel=200)
    assert "features.0.weight" not in comp.codes and "features.0.weight" in comp.raw  # 144 weights
    assert "features.4.weight" in comp.codes
