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
