"""Tests of the DSG compressor plugin (each a few seconds on a CPU)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from b2s_bench_plugins.compressors.dsg import SPEC, DSGConfig, calibration_inputs, compress
from b2s_bench_plugins.compressors.quantize import QuantizeConfig, UniformCode, quantize_tensor
from helpers import run_cli

import b2s_bench as b2s
from b2s_bench import ConfigError, build_config
from b2s_bench.calibration import DSG, activation_ranges, synthesize
from b2s_bench.plugins import load_plugins
from b2s_bench.testing import check_compressor, tiny_context, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = dict(SPEC.quick)


def test_dsg_is_registered_with_its_calibration_inputs_and_sources() -> None:
    spec = load_plugins().compressors.get("dsg")
    assert spec.family == "quantization" and spec.track_for(DSGConfig()) == "synthetic"
    assert spec.calibration_inputs.resolve() is calibration_inputs  # named lazily: registering imports no torch
    assert "authors' code" in spec.defaults_source and "ours" in spec.defaults_source


def test_calibration_inputs_are_dsg_samples_of_the_input_shape() -> None:
    config = build_config(DSGConfig, {**QUICK, "samples": 6, "batch_size": 3})
    ctx = tiny_context(2)
    x = calibration_inputs(tiny_model(0), config, ctx)
    assert x.shape == (6, *ctx.input_shape) and torch.isfinite(x).all() and x.device.type == "cpu"
    # exactly the core's DSG synthesis with these settings, seeded by the cell
    again = synthesize(tiny_model(0), dataclasses.replace(DSG, samples=6, batch_size=3, iterations=3), ctx).images
    assert torch.equal(x, again)
    assert not torch.equal(x, calibration_inputs(tiny_model(0), config, tiny_context(3)))
    # what the activations stage does with them: ranges of every quantized layer's input
    comp = compress(tiny_model(0), config, ctx)
    names = [k.rpartition(".")[0] for k in comp.codes]
    ranges = activation_ranges(comp.module(), names, [x], torch.device("cpu"), 6, "minmax", torch.Generator().manual_seed(0))
    assert set(ranges) == set(names) and all(lo < hi for lo, hi in ranges.values())


def test_weights_are_per_channel_affine_min_max_with_exact_bits() -> None:
    model = tiny_model(0)
    comp = compress(model, build_config(DSGConfig, {**QUICK, "bits": 4}), tiny_context(0))
    state = model.state_dict()
    grid = QuantizeConfig(bits=4, granularity="channel", symmetric=False, clipping="minmax")
    expected_bits = 0
    for key, code in comp.codes.items():
        assert isinstance(code, UniformCode) and not code.symmetric
        assert torch.equal(code.q, quantize_tensor(state[key], grid).q)  # every conv and linear, first and last too
        channels = state[key].shape[0]
        assert code.scale.numel() == channels
        header = b2s.header_bits(code.meta())
        # N·4 codes, per channel a 32-bit scale and a 4-bit zero point, the header
        assert code.bits().total == state[key].numel() * 4 + channels * (32 + 4) + header
        expected_bits += code.bits().total
        err = (code.decode() - state[key]).abs().max()
        assert float(err) <= float(code.scale.max()) / 2 + 1e-6  # round to nearest on the grid
    assert len(comp.codes) == 4
    raw_bits = sum(32 * v.numel() for k, v in comp.raw.items() if not k.endswith("num_batches_tracked"))
    assert comp.size().total_bits >= expected_bits and comp.size().total_bits - expected_bits <= raw_bits + 64
    assert comp.info["rounding"] == "nearest" and comp.info["weight_bits"] == 4


def test_adaround_learns_the_rounding_on_dsg_samples() -> None:
    config = build_config(DSGConfig, {**QUICK, "rounding": "adaround", "samples": 8, "batch_size": 8, "bits": 3})
    comp = compress(tiny_model(0), config, tiny_context(0))
    nearest = compress(tiny_model(0), dataclasses.replace(config, rounding="nearest"), tiny_context(0))
    assert comp.info["synthesis"]["samples"] == 8
    facts = comp.info["adaround"]
    assert facts["iterations"] == 5 and facts["error_adaround"] <= facts["error_rtn"] + 1e-9
    # the same grid: the same bits; the codes only as learned
    assert comp.size().total_bits == nearest.size().total_bits
    for key, code in comp.codes.items():
        assert torch.equal(code.scale, nearest.codes[key].scale)


def test_dsg_contract_and_bad_settings() -> None:
    report = check_compressor(SPEC)
    assert report.bits > 0
    check_compressor(SPEC, {"rounding": "adaround"})
    for bad, key in (
        ({"bits": 9}, "bits"),
        ({"bits": 32}, "bits"),
        ({"rounding": "stochastic"}, "rounding"),
        ({"slack_rule": "percentile"}, "slack_rule"),
        ({"slack": -0.1}, "slack"),
        ({"samples": 1}, "samples"),
        ({"batch_size": 1}, "batch_size"),
        ({"scale_bits": 8}, "scale_bits"),
    ):
        with pytest.raises(ConfigError) as err:
            build_config(DSGConfig, bad, owner="dsg")
        assert err.value.key == key, (bad, err.value)


SUITE = """
suite: dsg-wa
models: [{name: tiny:cnn}]
dataset: {name: random, n: 16}
activations: {bits: 6, ranges: synthetic, samples: 8, synthetic_iterations: 2}
compressors:
  - name: dsg
    bits: 6
    samples: 6
    batch_size: 6
    iterations: 2
metrics: [top1, bits]
"""


def test_a_suites_activations_stage_calibrates_a_dsg_row_on_dsg_samples(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run_cli("run", str(write_suite(SUITE)), "--out", str(out), "-k", "dsg") == 0
    recs = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    rec = next(r for r in recs if r["label"].startswith("dsg"))
    assert rec["status"] == "ok", rec.get("error")
    facts = rec["details"]["activations"]
    # DSG's own 6 samples (calibration_inputs), not the stage's 8 ZeroQ inputs
    assert facts["inputs"] == {"kind": "the method's own synthetic inputs", "samples": 6}
    assert facts["bits"] == 6 and facts["quantized_inputs"] >= 1
