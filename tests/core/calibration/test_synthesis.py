"""BN-statistics data synthesis (b2s_bench/calibration/synthesis.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from b2s_bench import ConfigError, NotApplicableError, build_config
from b2s_bench.calibration import (
    DEEPINVERSION,
    DSG,
    ZEROQ,
    SynthesisConfig,
    bn_layers,
    bn_loss,
    sample_similarity,
    slack_term,
    synthesize,
)
from b2s_bench.testing import TinyCNN, TinyMLP, tiny_context, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def calibrated_cnn(seed: int = 0) -> TinyCNN:
    """A TinyCNN whose BN running statistics are those of one input distribution (as after training)."""
    torch.manual_seed(seed)
    model = TinyCNN()
    x = nn.functional.avg_pool2d(torch.randn(256, 1, 32, 32, generator=torch.Generator().manual_seed(seed)) * 3, 5, 1)
    for m in bn_layers(model):
        m.momentum = None  # cumulative average: the statistics of the whole batch
    model.train()
    with torch.no_grad():
        model(x + 0.7)
    return model.eval()


def test_synthesized_images_reduce_the_bn_loss() -> None:
    model = calibrated_cnn()
    config = dataclasses.replace(ZEROQ, samples=16, batch_size=16, iterations=60)
    made = synthesize(model, config, tiny_context(0))
    noise = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    assert made.images.shape == (16, 1, 28, 28) and torch.isfinite(made.images).all()
    before, after = bn_loss(model, noise, "zeroq"), bn_loss(model, made.images, "zeroq")  # the loss ZEROQ minimizes
    assert after < 0.2 * before, (before, after)
    assert made.bn_loss_end < made.bn_loss_start
    assert made.info()["samples"] == 16


def test_synthesis_is_seeded_and_leaves_the_model_as_it_was() -> None:
    model = tiny_model(0)
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    config = dataclasses.replace(DEEPINVERSION, samples=5, batch_size=4, iterations=3)
    a = synthesize(model, config, tiny_context(3))
    b = synthesize(model, config, tiny_context(3))
    c = synthesize(model, config, tiny_context(4))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (5, 1, 28, 28)  # a last batch of one is merged into the one before
    assert a.labels.shape == (5,) and int(a.labels.max()) < 10
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_synthesis_reports_progress_and_runs_under_no_grad() -> None:
    calls = []

    class Bar:
        def update(self, n: int = 1) -> None:
            calls.append(n)

        def set_postfix_str(self, s: str) -> None:
            pass

        def close(self) -> None:
            calls.append("closed")

    ctx = dataclasses.replace(tiny_context(0), progress=lambda total, desc: calls.append((total, desc)) or Bar())
    with torch.no_grad():
        synthesize(tiny_model(0), SynthesisConfig(samples=8, batch_size=4, iterations=2), ctx)
    assert calls[0] == (4, "synthesize") and calls.count(1) == 4 and calls[-1] == "closed"


def test_synthesis_needs_batchnorm_and_an_input_shape() -> None:
    with pytest.raises(NotApplicableError, match="no BatchNorm"):
        synthesize(
            TinyMLP(),
            SynthesisConfig(samples=4, batch_size=4, iterations=1),
            dataclasses.replace(tiny_context(0), input_shape=(1, 8, 8)),
        )
    with pytest.raises(ValueError, match="input shape"):
        synthesize(
            tiny_model(0),
            SynthesisConfig(samples=4, iterations=1),
            dataclasses.replace(tiny_context(0), input_shape=None),
        )


def test_synthesis_settings_are_checked() -> None:
    with pytest.raises(ConfigError) as err:
        build_config(SynthesisConfig, {"batch_size": 1})
    assert err.value.key == "batch_size"
    with pytest.raises(ConfigError):
        build_config(SynthesisConfig, {"jitter": 1.5})


def test_the_two_bn_loss_forms_by_hand() -> None:
    bn = torch.nn.BatchNorm2d(2).eval()
    bn.running_mean.copy_(torch.tensor([1.0, -1.0]))
    bn.running_var.copy_(torch.tensor([4.0, 1.0]))
    x = torch.zeros(2, 2, 1, 1)
    x[0, 0], x[1, 0] = 1.0, 3.0  # channel 0: mean 2, var 1 (std 1); channel 1: mean 0, var 0
    # DeepInversion: ||mean - running_mean|| + ||var - running_var|| = ||(1, 1)|| + ||(-3, -1)||
    assert bn_loss(bn, x) == pytest.approx(2**0.5 + 10**0.5, rel=1e-5)
    # ZeroQ: (||(1, 1)||^2 + ||(1 - 2, 0 - 1)||^2) / 2 for the BN layer, plus the input against N(0, 1):
    # input means (2, 0), stds (1, 0) -> (||(2, 0)||^2 + ||(0, -1)||^2) / 2
    assert bn_loss(bn, x, "zeroq") == pytest.approx((2 + 2) / 2 + (4 + 1) / 2, rel=1e-5)


def standardized(batch: int, channels: int, side: int = 4, seed: int = 0) -> torch.Tensor:
    """Inputs whose every sample and channel has spatial mean 0 and (biased) standard deviation 1."""
    x = torch.randn(batch, channels, side, side, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    flat = x.flatten(2)
    flat = (flat - flat.mean(dim=2, keepdim=True)) / flat.std(dim=2, correction=0, keepdim=True)
    return flat.reshape(x.shape).float()


def test_dsg_slack_leaves_deviations_inside_the_margin_unpenalised() -> None:
    # one BN layer whose running statistics sit exactly one margin away from every sample's statistics:
    # relative slack s gives the margin s·σ_BN; with σ_BN = 1/(1 − s) that margin is σ_BN − 1 (the std
    # deviation of a standardized sample) and the running mean is set to it too
    s, channels = 0.2, 3
    bn = nn.BatchNorm2d(channels).eval()
    sigma = 1 / (1 - s)
    bn.running_var.fill_(sigma**2)
    bn.running_mean.fill_(s * sigma)
    x = standardized(5, channels)
    at_margin = SynthesisConfig(bn_form="dsg", slack=s)
    assert bn_loss(bn, x, config=at_margin) == pytest.approx(0.0, abs=1e-9)
    inside = SynthesisConfig(bn_form="dsg", slack=s * 1.01)
    assert bn_loss(bn, x, config=inside) == pytest.approx(0.0, abs=1e-9)
    # beyond it: each channel pays the excess of its mean and of its std, squared
    for slack in (0.1, 0.0):
        excess = s * sigma - slack * sigma
        expected = channels * 2 * excess**2
        assert bn_loss(bn, x, config=SynthesisConfig(bn_form="dsg", slack=slack)) == pytest.approx(expected, rel=1e-4)
    # an absolute margin of the same size is the same loss; the per-sample form without slack is ZeroQ's code
    assert bn_loss(bn, x, config=SynthesisConfig(bn_form="dsg", slack=s * sigma, slack_rule="absolute")) == pytest.approx(
        0.0, abs=1e-9
    )
    assert bn_loss(bn, x, "dsg") == pytest.approx(channels * 2 * (s * sigma) ** 2, rel=1e-4)
    # the slack distance itself, by hand: |v − r| − m clipped at 0, squared, summed over channels
    value = torch.tensor([[1.0, -2.0, 0.5]])
    assert float(slack_term(value, 0.0, 1.0)[0]) == pytest.approx(0.0 + 1.0 + 0.0)


def test_dsg_layer_emphasis_weights_sample_i_on_layer_i() -> None:
    # two BN layers that pass the input through (running mean 0, var 1): both see the same statistics.
    # Only sample 0 deviates (spatial mean a): its term a² at each layer, doubled (emphasis 1) on layer 0 only
    model = nn.Sequential(nn.BatchNorm2d(1), nn.BatchNorm2d(1)).eval()
    a = 0.5
    x = standardized(2, 1)
    x[0] += a
    per_layer = a**2
    input_term = a**2 / 2  # the input against N(0, 1), averaged over the two samples
    plain = bn_loss(model, x, config=SynthesisConfig(bn_form="dsg"))
    assert plain == pytest.approx(2 * per_layer / 2 + input_term, rel=1e-3)
    emphasised = bn_loss(model, x, config=SynthesisConfig(bn_form="dsg", emphasis=1.0))
    assert emphasised == pytest.approx((2 * per_layer + per_layer) / 2 + input_term, rel=1e-3)
    # the deviating sample moved to position 1: it emphasises layer 1, the same total
    swapped = bn_loss(model, x.flip(0), config=SynthesisConfig(bn_form="dsg", emphasis=1.0))
    assert swapped == pytest.approx(emphasised, rel=1e-3)
    # three samples, two layers: sample 2 cycles back to layer 0
    y = torch.cat([standardized(2, 1, seed=1), x[:1]])
    assert bn_loss(model, y, config=SynthesisConfig(bn_form="dsg", emphasis=1.0)) == pytest.approx(
        (2 * per_layer + per_layer) / 3 + a**2 / 3, rel=1e-3
    )


def sample_spread(model: nn.Module, x: torch.Tensor) -> float:
    """How different the samples' statistics are: at each BN layer, the spread over samples of a
    sample's per-channel mean, in units of the channel's BN standard deviation; averaged."""
    spreads: list[float] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        means = args[0].flatten(2).mean(dim=2)
        spreads.append(float((means.std(dim=0) / module.running_var.sqrt()).mean()))

    handles = [m.register_forward_pre_hook(hook) for m in bn_layers(model)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return sum(spreads) / len(spreads)


def test_dsg_samples_are_more_diverse_than_zeroq_alignment() -> None:
    # measured on a small calibrated BN model with one seed (the paper's homogenization claim):
    # aligning every sample to the BN statistics (ZeroQ's per-sample loss) makes the samples' statistics
    # nearly identical; slack + layer emphasis leave them apart; the diversity term decorrelates samples
    # that ZeroQ's batch-statistics alignment (our ZEROQ preset) makes strongly alike
    model = calibrated_cnn()
    short = {"samples": 8, "batch_size": 8, "iterations": 120}
    runs = {
        "aligned": dataclasses.replace(DSG, **short, slack=0.0, emphasis=0.0, diversity_weight=0.0),
        "sda+lse": dataclasses.replace(DSG, **short, diversity_weight=0.0),
        "dsg": dataclasses.replace(DSG, **short),
        "zeroq": dataclasses.replace(ZEROQ, **short),
    }
    made = {k: synthesize(model, c, tiny_context(0)).images for k, c in runs.items()}
    spread = {k: sample_spread(model, x) for k, x in made.items()}
    similarity = {k: float(sample_similarity(x)) for k, x in made.items()}
    assert spread["sda+lse"] > 2 * spread["aligned"], spread
    assert similarity["dsg"] < 0.5 * similarity["sda+lse"] and similarity["dsg"] < 0.5 * similarity["zeroq"], similarity
    # and DSG still matches the BN statistics: its loss fell far below the noise's
    noise = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    assert bn_loss(model, made["dsg"], config=runs["dsg"]) < 0.05 * bn_loss(model, noise, config=runs["dsg"])


def test_sample_similarity_by_hand() -> None:
    assert float(sample_similarity(torch.eye(3))) == pytest.approx(0.0)
    assert float(sample_similarity(torch.ones(3, 4))) == pytest.approx(1.0)
    pair = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # cosine 1/√2: squared 1/2 on both off-diagonals
    assert float(sample_similarity(pair)) == pytest.approx(0.5)


def test_dsg_settings_are_checked() -> None:
    for bad, key in (
        ({"slack": 0.1}, "slack"),  # DSG's slack needs the per-sample (dsg) form
        ({"emphasis": 1.0, "bn_form": "zeroq"}, "emphasis"),
        ({"bn_form": "dsg", "slack": -1.0}, "slack"),
        ({"bn_form": "dsg", "slack_rule": "percent"}, "slack_rule"),
        ({"diversity_weight": -0.5}, "diversity_weight"),
    ):
        with pytest.raises(ConfigError) as err:
            build_config(SynthesisConfig, bad)
        assert err.value.key == key, (bad, err.value)
    assert DSG.bn_form == "dsg" and DSG.slack > 0 and DSG.emphasis == 1.0 and DSG.diversity_weight > 0
