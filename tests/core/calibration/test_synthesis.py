"""BN-statistics data synthesis (b2s_bench/calibration/synthesis.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from b2s_bench import ConfigError, build_config
from b2s_bench.calibration import DEEPINVERSION, ZEROQ, SynthesisConfig, bn_layers, bn_loss, synthesize
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
    with pytest.raises(ValueError, match="no BatchNorm"):
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
