"""UDFC (re-implemented from the paper, arXiv 2308.07209): the closed-form compensation, its gain
over plain pruning, exact bits and the contract."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from b2s_bench_plugins.compressors.udfc import SPEC, UDFCConfig, compress, prune_plan
from b2s_bench_plugins.compressors.udfc.compensation import Gaussians, cross_covariance, moments
from torch import nn

import b2s_bench as b2s
from b2s_bench import Compressed, Context
from b2s_bench.testing import check_compressor, tiny_context, tiny_model


def _ctx() -> Context:
    return Context(input_shape=(3, 8, 8), num_classes=5)


class LinearToy(nn.Module):
    """conv → BN → (no activation) → 1x1 conv (with a bias, or bias-free and followed by a BN)."""

    def __init__(self, next_bias: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8, eps=0.0)
        self.conv2 = nn.Conv2d(8, 4, 1, bias=next_bias)
        self.bn2 = nn.BatchNorm2d(4) if not next_bias else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.bn1(self.conv1(x))))


def _linear_toy(next_bias: bool, c: float) -> LinearToy:
    torch.manual_seed(0)
    model = LinearToy(next_bias)
    with torch.no_grad():
        w = torch.randn(8, 3 * 9)
        w = w / w.norm(dim=1, keepdim=True) * torch.linspace(1.0, 2.0, 8)[:, None]
        w[5] = c * w[2]  # channel 5 is exactly c x channel 2: the smallest filter, pruned first
        model.conv1.weight.copy_(w.reshape(8, 3, 3, 3))
        mean, var = torch.randn(8), torch.rand(8) + 0.5
        mean[5], var[5] = c * mean[2], c * c * var[2]  # BN statistics of a filter c times another
        model.bn1.running_mean.copy_(mean)
        model.bn1.running_var.copy_(var)
        model.bn1.weight.uniform_(-1.5, 1.5)
        model.bn1.bias.uniform_(-0.5, 0.5)
        if isinstance(model.bn2, nn.BatchNorm2d):
            model.bn2.running_mean.uniform_(-0.5, 0.5)
            model.bn2.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("next_bias", [True, False])
@pytest.mark.parametrize("c", [-0.3, 0.45])
def test_the_closed_form_is_exact_on_a_linear_toy(next_bias: bool, c: float) -> None:
    # a pruned channel that is exactly c x a kept one, no nonlinearity: S = sign(c)·γ_p/γ_k and the
    # leftover mean β_p − S·β_k (into conv2's bias, or bn2's running mean) make the model the dense one
    model = _linear_toy(next_bias, c)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        dense = model(x)
    comp = compress(copy.deepcopy(model), UDFCConfig(sparsity=1 / 8, bits=32), _ctx())
    assert comp.info["pruned_channels"] == {"conv1": 1}
    assert comp.raw["conv1.weight"].shape[0] == 7 and comp.raw["conv2.weight"].shape[1] == 7
    assert comp.info["bias"]["conv2"] == ("bias" if next_bias else "bn2.running_mean")
    with torch.no_grad():
        out = comp.module()(x)
    assert float((out - dense).abs().max()) <= 1e-5
    # without the compensation (the channel's columns dropped), the output moves a lot
    plain = copy.deepcopy(model)
    with torch.no_grad():
        plain.conv2.weight[:, 5] = 0
        assert float((plain(x) - dense).abs().max()) > 1e-2


def test_gaussian_moments_match_monte_carlo() -> None:
    g = Gaussians(torch.tensor([0.3, -0.2]), torch.tensor([1.0, 0.5]))
    gen = torch.Generator().manual_seed(0)
    u, v = torch.randn(2, 400_000, generator=gen, dtype=torch.float64)
    a, b = 0.3 + u, -0.2 + 0.5 * (0.6 * u + 0.8 * v)
    mean, var = moments(torch.relu, g, 129)
    assert abs(float(mean[0]) - float(a.relu().mean())) < 5e-3 and abs(float(var[0]) - float(a.relu().var())) < 5e-3
    cov = cross_covariance(torch.relu, g, g, torch.tensor([[1.0, 0.6], [0.6, 1.0]]), 129)
    assert abs(float(cov[0, 1]) - float(torch.cov(torch.stack([a.relu(), b.relu()]))[0, 1])) < 3e-3


class SmallCNN(nn.Module):
    """Three conv → BN → ReLU stages, global pooling, a classifier: three compensable chains."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _random_bn_model(seed: int) -> SmallCNN:
    """Random weights; BatchNorm statistics and affine parameters from random inputs (so they are the
    statistics of this network), then eval."""
    torch.manual_seed(seed)
    model = SmallCNN()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.momentum = None  # a cumulative average
        model.train()
        for _ in range(8):
            model(torch.randn(32, 3, 8, 8))
    return model.eval()


def _relative_error(model: nn.Module, other: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        ref = model(x)
        return float((other(x) - ref).pow(2).mean() / ref.pow(2).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compensation_beats_plain_pruning_on_a_random_bn_model(seed: int) -> None:
    model = _random_bn_model(seed)
    x = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    config = UDFCConfig(sparsity=0.5, bits=32)
    comp = compress(copy.deepcopy(model), config, _ctx())
    assert comp.info["pruned_channels"] == {"features.0": 8, "features.3": 16, "features.6": 16}
    # plain structured pruning of the same channels: their columns in the next layer dropped
    plan = prune_plan({n: model.get_submodule(n).weight for n in ("features.0", "features.3", "features.6")}, config)
    plain = copy.deepcopy(model)
    with torch.no_grad():
        for layer, nxt in (("features.0", "features.3"), ("features.3", "features.6"), ("features.6", "fc")):
            plain.get_submodule(nxt).weight[:, plan[layer]] = 0
    udfc, baseline = _relative_error(model, comp.module(), x), _relative_error(model, plain, x)
    assert udfc < 0.8 * baseline, (udfc, baseline)


def test_quantization_compensation_beats_plain_rounding_over_seeds() -> None:
    # quantize only (W3): each channel's quantization error compensated in the next layer, against the
    # same grid without compensation (the quantize plugin at the same settings). A random model is not
    # always helped (on torchao's full grid, measured: better in 4 of 6 seeds, seeds 1 and 4 worse), so
    # the claim is the mean over seeds and a majority of them
    from b2s_bench_plugins.compressors.quantize import QuantizeConfig
    from b2s_bench_plugins.compressors.quantize import compress as rtn

    ours, theirs = [], []
    for seed in range(6):
        model = _random_bn_model(seed)
        x = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
        comp = compress(copy.deepcopy(model), UDFCConfig(bits=3), _ctx())
        assert set(comp.info["compensated"]) == {"features.0", "features.3", "features.6"}
        assert comp.info["mean_shift"]["features.3"] == "bn"
        plain = rtn(copy.deepcopy(model), QuantizeConfig(bits=3), _ctx())
        assert comp.size().total_bits == plain.size().total_bits  # same storage: only the values differ
        ours.append(_relative_error(model, comp.module(), x))
        theirs.append(_relative_error(model, plain.module(), x))
    assert sum(ours) < 0.75 * sum(theirs), (ours, theirs)
    assert sum(o < t for o, t in zip(ours, theirs, strict=True)) >= 4, (ours, theirs)


def test_exact_bits_pruned_and_quantized(tmp_path: Path) -> None:
    model = _random_bn_model(0)
    comp = compress(copy.deepcopy(model), UDFCConfig(sparsity=0.25, bits=5, scale_bits=16), _ctx())
    # by hand: the shrunk shapes, 5 bits a weight, one 16-bit scale per output channel, the header
    shapes = {"features.0.weight": (12, 3, 3, 3), "features.3.weight": (24, 12, 3, 3), "features.6.weight": (24, 24, 3, 3)}
    shapes["fc.weight"] = (5, 24)
    expected = 0
    for key, shape in shapes.items():
        code = comp.codes[key]
        assert tuple(code.decode().shape) == shape
        n = 1
        for s in shape:
            n *= s
        expected += 5 * n + 16 * shape[0] + b2s.header_bits(code.meta())
    state = model.state_dict()
    for key, value in comp.raw.items():
        expected += 32 * value.numel()
        if key in state and tuple(state[key].shape) != tuple(value.shape):
            expected += 32 * value.dim()  # a shrunk raw tensor stores its new shape
    assert comp.size().total_bits == expected
    assert comp.raw["features.1.running_var"].shape == (12,) and "fc.bias" in comp.raw
    comp.save(str(tmp_path / "a"))
    loaded = Compressed.load(str(tmp_path / "a"), SmallCNN(), {c.kind: c for c in SPEC.codes})
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.module()(x), comp.module()(x))


def test_global_scope_and_skipped_chains_are_recorded() -> None:
    comp = compress(tiny_model(), UDFCConfig(sparsity=0.5, scope="global", bits=4), tiny_context())
    # TinyCNN: features.0 goes through a max-pool (not compensable); features.4 → pool → flatten → linear is
    assert comp.info["chains"] == {"features.4": "classifier.1"}
    assert "features.0" in comp.info["skipped"] and comp.info["pruned_channels"] == {"features.4": 16}
    assert comp.codes["classifier.1.weight"].decode().shape == (64, 16 * 16)


def test_contract_and_identity() -> None:
    report = check_compressor(SPEC)
    assert report.identity_max_error == 0.0
    check_compressor(SPEC, {"sparsity": 0.5, "bits": 4, "symmetric": False})
    check_compressor(SPEC, {"sparsity": 0.3, "bits": 32, "pairing": "cosine", "bias_compensation": False})
    check_compressor(SPEC, {"bits": 8, "granularity": "tensor", "scale_bits": 16, "mean_shift": "none", "skip_last": True})


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"sparsity": 1.0}, "sparsity"),
        ({"bits": 16}, "bits"),
        ({"pairing": "nearest"}, "pairing"),
        ({"quadrature_points": 3}, "quadrature_points"),
    ],
)
def test_bad_settings_name_the_key(settings: dict[str, object], key: str) -> None:
    with pytest.raises(b2s.ConfigError, match=key):
        b2s.build_config(UDFCConfig, settings, owner="udfc")
