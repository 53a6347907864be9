"""Every registered compressor on the zoo's cars UNet (issue 18): on the shipped weights and the
``carvana-synth`` data (its calibration images and its training batches of images and masks), each
either compresses (ratio > 1, finite N x 1 x H x W logits, its target met) or is not applicable with
a reason (``NotApplicableError``, or coverage under the core's minimum, recorded as not applicable).

Each runs at its ``quick`` settings, so the matrix takes seconds per compressor; it iterates the
registry, so a compressor added later is covered once registered.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from torch import nn

from b2s_bench import Context, NotApplicableError, build_config
from b2s_bench.compression.coverage import coverage, coverage_reason
from b2s_bench.execution import load_plugins
from b2s_bench.execution.cell import apply_stage
from b2s_bench.sources import LoadedData, ModelRequest

COMPRESSORS = load_plugins().compressors.names()
UNET = ModelRequest("zoo:cars-unet")


@functools.lru_cache(maxsize=1)
def _loaded() -> tuple[dict[str, torch.Tensor], LoadedData]:
    plugins = load_plugins()
    model = plugins.models.get("zoo").build(UNET)
    spec = plugins.datasets.get("carvana-synth")
    data = spec.build(build_config(spec.config, {"cars": 2, "train_cars": 4}), model)
    return {k: v.clone() for k, v in model.module.state_dict().items()}, data


def unet() -> nn.Module:
    """A fresh copy of the shipped zoo UNet (compressors may change what they are given)."""
    from b2s_bench_plugins.sources import zoo

    module = zoo.architecture(zoo.recipe_for(UNET))
    module.load_state_dict(_loaded()[0])
    return module.eval()


def context() -> Context:
    from b2s_bench_plugins.sources import zoo

    data = _loaded()[1]
    return Context(
        track="training",
        input_shape=(3, 64, 96),
        num_classes=1,
        calibration=data.calibration,
        training=data.training,
        build_model=lambda name: zoo.architecture(zoo.recipe_for(ModelRequest(name))).eval(),
    )


def outcome(name: str, settings: dict[str, Any]) -> str:
    """``"compressed"`` or ``"not applicable: <reason>"``; fails on anything else."""
    plugins = load_plugins()
    spec = plugins.compressors.get(name)
    config = build_config(spec.config, {**spec.quick, **settings}, owner=name)
    ctx = context()
    try:
        comp = spec.compress(unet(), config, ctx)
    except NotApplicableError as e:
        assert e.reason.strip(), f"{name}: NotApplicableError without a reason"
        if spec.recode is None:
            return f"not applicable: {e.reason}"
        quantize = plugins.compressors.get("quantize")  # a later stage (entropy coding): after a quantizer
        first = quantize.compress(unet(), build_config(quantize.config, {"bits": 4}, owner="quantize"), ctx)
        comp = apply_stage(first, spec, config, ctx)
        assert comp.size().total_bits < first.size().total_bits, f"{name}: recoding 4-bit codes saved nothing"
    x = _loaded()[1].calibration(4)
    with torch.no_grad():
        dense, out = unet()(x), comp.module()(x)
    assert out.shape == dense.shape == (4, 1, 64, 96), f"{name}: output {tuple(out.shape)}"
    assert bool(torch.isfinite(out).all()), f"{name}: the compressed model's logits are not finite"
    reason = coverage_reason(coverage(comp, unet()))
    if reason is not None:
        return f"not applicable: {reason}"
    size = comp.size()
    assert size.baseline_bits > size.total_bits, f"{name} {settings}: ratio {size.baseline_bits / size.total_bits:.3f}, not > 1"
    target = spec.target(config, comp, unet()) if spec.target else None
    assert target is None or target.met, f"{name} {settings}: {target.reason()}"
    return "compressed"


#: settings beside ``quick`` that make a method meaningful here (checked where registered)
SETTINGS: dict[str, dict[str, Any]] = {
    "distill": {"student": "zoo:cars-unet-small"},
}


@pytest.mark.parametrize("name", COMPRESSORS)
def test_every_compressor_compresses_the_zoo_unet_or_says_why_not(name: str) -> None:
    result = outcome(name, SETTINGS.get(name, {}))
    assert result == "compressed" or result.startswith("not applicable: "), result


def test_distillation_of_per_pixel_logits_is_pixelwise() -> None:
    """distill's KD loss on N x C x H x W: KL per pixel (over classes, or Bernoulli for C = 1), averaged
    over pixels; the labels term skips ignored (255) pixels."""
    from b2s_bench_plugins.compressors.distill import kd_loss

    gen = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(2, 1, 4, 5, generator=gen), torch.randn(2, 1, 4, 5, generator=gen)
    assert float(kd_loss(z_t, z_t, None, 2.0, 1.0)) == pytest.approx(0.0, abs=1e-6)
    p, q = torch.sigmoid(z_s / 2), torch.sigmoid(z_t / 2)
    bernoulli = (q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log()).mean() * 4
    assert float(kd_loss(z_s, z_t, None, 2.0, 1.0)) == pytest.approx(float(bernoulli), rel=1e-5)
    masks = (torch.rand(2, 4, 5, generator=gen) > 0.5).long()
    ignored = masks.clone()
    ignored[0] = 255  # a whole image ignored: only the second image's pixels count in the labels term
    second = nn.functional.binary_cross_entropy_with_logits(z_s[1:], masks[1:].unsqueeze(1).float())
    assert float(kd_loss(z_s, z_t, ignored, 2.0, 0.0)) == pytest.approx(float(second), rel=1e-5)
    multi_s, multi_t = torch.randn(2, 3, 4, 5, generator=gen), torch.randn(2, 3, 4, 5, generator=gen)
    log_s, log_t = multi_s.log_softmax(1), multi_t.log_softmax(1)
    per_pixel = (log_t.exp() * (log_t - log_s)).sum(1).mean()
    assert float(kd_loss(multi_s, multi_t, None, 1.0, 1.0)) == pytest.approx(float(per_pixel), rel=1e-5)


def test_share_fine_tunes_its_centroids_on_masks() -> None:
    """Trained quantization on a segmentation model: the supervised loss follows the output's layout
    (binary cross-entropy per pixel for 1-channel logits, 255 ignored), not classification's
    cross-entropy over one channel (which failed: "Target 1 is out of bounds")."""
    plugins = load_plugins()
    spec = plugins.compressors.get("share")
    config = build_config(spec.config, {"bits": 2, "finetune_epochs": 1, "finetune_lr": 0.001}, owner="share")
    comp = spec.compress(unet(), config, context())
    facts = comp.info["finetune"]
    assert facts["steps"] >= 1 and facts["epoch_loss"][-1] < facts["first_loss"]
