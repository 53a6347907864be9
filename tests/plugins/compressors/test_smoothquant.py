"""smoothquant: the contract; the defining properties on a block whose LayerNorm output has outlier
channels: smoothing is an exact rewrite before quantization ((X/s)(sW) = XW), it shrinks the
activations' per-channel range ratio (max/median of max|X_j|), and W8A8 after it has less output error
than naive W8A8 (static per tensor and dynamic per token); the static range is the symmetric int8 grid
through the core's activation quantizer, applied at evaluation and counted; timm's ViT gets its two
LayerNorm groups smoothed; bad settings and missing data named."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from b2s_bench_plugins.compressors.smoothquant import SPEC, SmoothQuantConfig, smooth, static_range
from torch import nn

import b2s_bench as b2s
from b2s_bench.calibration import fake_quantize, fake_quantize_per_token
from b2s_bench.testing import check_compressor

pytestmark = pytest.mark.usefixtures("one_thread")


class OutlierBlock(nn.Module):
    """LayerNorm (four channels with a 40× weight: the outliers LLMs show) → fc1 → ReLU → fc2, residual, head."""

    def __init__(self, width: int = 64, hidden: int = 128):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.weight[:4] *= 40.0
            self.norm.bias.uniform_(-0.1, 0.1)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.fc2(torch.relu(self.fc1(self.norm(x))))
        return self.head(x.mean(1))


def data(seed: int, n: int = 64) -> torch.Tensor:
    return torch.randn(n, 8, 64, generator=torch.Generator().manual_seed(seed))


def ctx(inputs: torch.Tensor) -> b2s.Context:
    return b2s.Context(seed=0, track="calibration", input_shape=tuple(inputs.shape[1:]), calibration=lambda n: inputs[:n])


def run(model: nn.Module, inputs: torch.Tensor, **settings: Any) -> b2s.Compressed:
    config = b2s.build_config(SmoothQuantConfig, {"calibration_samples": 64, **settings}, owner="smoothquant")
    return SPEC.compress(model, config, ctx(inputs))


@pytest.mark.parametrize("settings", [{}, {"activation_mode": "dynamic"}, {"weight_granularity": "tensor", "smooth": False}])
def test_contract(settings: dict[str, Any]) -> None:
    assert check_compressor(SPEC, settings).bits > 0


def test_smoothing_is_exact_and_shrinks_the_activation_range_ratio() -> None:
    torch.manual_seed(0)
    model = OutlierBlock().eval()
    inputs = data(0)
    done = smooth(model, ["fc1", "fc2", "head"], list(inputs.split(16)), SmoothQuantConfig(), ctx(inputs))
    assert [g["layers"] for g in done.groups] == [["fc1"]] and done.groups[0]["norm"] == "norm"
    smoothed = copy.deepcopy(model)
    smoothed.load_state_dict(done.state)
    test = data(1, 16)
    with torch.no_grad():
        dense, after = model(test), smoothed(test)
        assert torch.allclose(after, dense, rtol=1e-5, atol=1e-5 * float(dense.abs().max()))
        seen = {}
        for name, m in (("dense", model), ("smoothed", smoothed)):
            handle = m.fc1.register_forward_pre_hook(lambda mod, a, name=name: seen.__setitem__(name, a[0]))
            m(test)
            handle.remove()
    ratio = {k: float(v.abs().amax((0, 1)).max() / v.abs().amax((0, 1)).median()) for k, v in seen.items()}
    assert ratio["smoothed"] < ratio["dense"] / 4, ratio
    g = done.groups[0]
    assert g["range_ratio_after"] < g["range_ratio_before"] / 4


@pytest.mark.parametrize("activations", ["static", "dynamic"])
def test_w8a8_error_is_below_naive_w8a8_on_outlier_inputs(activations: str) -> None:
    for seed in range(3):
        torch.manual_seed(seed)
        model = OutlierBlock().eval()
        calibration, test = data(seed), data(seed + 100, 16)
        with torch.no_grad():
            dense = model(test)
            errors = {
                flag: float(
                    (run(model, calibration, smooth=flag, activation_mode=activations).module()(test) - dense).pow(2).mean()
                )
                for flag in (True, False)
            }
        assert errors[True] < errors[False], (seed, errors)


def test_static_ranges_are_the_symmetric_int8_grid_applied_and_counted() -> None:
    lo, hi = static_range(2.54, 8)
    x = 1.5 * torch.randn(10000, generator=torch.Generator().manual_seed(0))  # no exact ties (rounded apart)
    step = 2.54 / 127
    expected = torch.clamp(torch.round(x / step), -128, 127) * step
    assert torch.allclose(fake_quantize(x, lo, hi, 8), expected, atol=1e-6)
    assert float(fake_quantize(torch.zeros(1), lo, hi, 8).abs()) < 1e-6  # zero stays exactly representable
    torch.manual_seed(0)
    model = OutlierBlock().eval()
    comp = run(model, data(0))
    assert set(comp.activations) == {"fc1", "fc2", "head"} and comp.activation_bits == 8
    weights_only = b2s.Compressed(comp.codes, comp.raw, comp.skeleton, comp.original_shapes)
    assert comp.size().total_bits == weights_only.size().total_bits + 3 * 64  # each range is counted
    with torch.no_grad():
        assert not torch.equal(comp.module()(data(2, 4)), weights_only.module()(data(2, 4)))  # A8 is applied


def test_dynamic_per_token_quantizers_are_on_the_evaluated_model_and_counted() -> None:
    x = torch.randn(3, 5, 16)
    out = fake_quantize_per_token(x, 8, -1)
    step = x.abs().amax(-1, keepdim=True) / 127
    assert torch.allclose(out, torch.round(x / step) * step)
    torch.manual_seed(0)
    comp = run(OutlierBlock().eval(), data(0), activation_mode="dynamic")
    assert comp.activations == {} and comp.info["per_token_inputs"] == 3
    assert comp.token_activations == {"fc1": 8, "fc2": 8, "head": 8}
    weights_only = b2s.Compressed(comp.codes, comp.raw, comp.skeleton, comp.original_shapes)
    assert comp.size().total_bits == weights_only.size().total_bits + 3 * 32  # which layers, at what bits: a header
    module = comp.module()
    hooks = [type(h).__name__ for h in module.fc1._forward_pre_hooks.values()]
    assert hooks == ["_TokenQuantizer"]
    test = data(2, 4)
    with torch.no_grad():
        seen = {}
        module.fc1.register_forward_hook(lambda m, a, o: seen.__setitem__("x", a[0]))
        module(test)
    x1 = seen["x"]  # fc1's input as fc1 sees it: each token on its own 255-level grid
    step = x1.abs().amax(-1, keepdim=True) / 127
    assert torch.allclose(x1 / step, torch.round(x1 / step), atol=1e-3)


def test_vits_layernorm_groups_are_smoothed() -> None:
    vit = pytest.importorskip("timm.models.vision_transformer")
    model = vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10).eval()
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    comp = run(model, images, calibration_samples=16)
    norms = sorted(g["norm"] for g in comp.info["smoothed"])
    assert norms == ["blocks.0.norm1", "blocks.0.norm2", "blocks.1.norm1", "blocks.1.norm2"]
    with torch.no_grad():
        assert torch.isfinite(comp.module()(images[:2])).all()


def test_bad_settings_and_missing_data_are_named() -> None:
    for key, value in {"alpha": 1.5, "weight_bits": 9, "activation_mode": "per_channel", "weight_granularity": "group"}.items():
        with pytest.raises(b2s.ConfigError, match=key):
            b2s.build_config(SmoothQuantConfig, {key: value}, owner="smoothquant")
    with pytest.raises(ValueError, match="calibration"):
        SPEC.compress(nn.Sequential(nn.Linear(8, 8)), SmoothQuantConfig(), b2s.Context())


def test_a_suite_runs_the_three_methods_and_awq_under_the_entropy_stage(write_suite: Any, tmp_path: Any) -> None:
    import json

    from helpers import run_cli

    suite = write_suite("""
        suite: llm-methods
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        compressors:
          - {name: awq, calibration_samples: 16, alpha_grid: 4, search_tokens: 256}
          - pipeline: [{name: awq, calibration_samples: 16, alpha_grid: 4, search_tokens: 256}, {name: entropy}]
          - {name: smoothquant, calibration_samples: 16}
          - {name: smoothquant, calibration_samples: 16, activation_mode: dynamic}
          - {name: hqq}
        metrics: [bits, agreement]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 0
    records = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert all(r["status"] == "ok" for r in records), {r["label"]: r["error"] for r in records}
    by_label = {r["label"]: r for r in records}
    assert len(records) == 6, sorted(by_label)  # the dense reference too
    awq, coded = by_label["awq(calibration_samples=16, alpha_grid=4, search_tokens=256)"], None
    coded = next(r for label, r in by_label.items() if "entropy" in label)
    assert coded["size"]["total_bits"] < awq["size"]["total_bits"]  # the entropy stage codes awq's symbols
    static = by_label["smoothquant(calibration_samples=16)"]
    assert (
        static["size"]["total_bits"]
        > by_label["smoothquant(calibration_samples=16, activation_mode=dynamic)"]["size"]["total_bits"]
    )


def test_smoothed_weights_are_not_compared_weight_by_weight() -> None:
    """Smoothing rewrites W as sW (and the norm as γ/s): the decoded weights are an equivalent
    reparametrization, so the weight metrics and the limits say not applicable with the reason instead
    of reporting the rescaling as error (the lm suite's first run showed 99 % relative weight error);
    without smoothing the weights are compared as usual."""
    from b2s_bench.metrics import REPARAMETRIZED, Evaluation, NotApplicable
    from b2s_bench.sources import LoadedModel

    torch.manual_seed(0)
    model = OutlierBlock().eval()
    dense = LoadedModel(copy.deepcopy(model), (8, 64), 10, "hand-made")

    def evaluation(comp: b2s.Compressed) -> Evaluation:
        return Evaluation(comp.module(), dense, comp, None, torch.device("cpu"), 1, lambda: {}, {"compress": 0.0})

    smoothed = evaluation(run(copy.deepcopy(model), data(0)))
    assert smoothed.compressed.info[REPARAMETRIZED]
    assert smoothed.coded_pairs == [] and smoothed.weight_pairs == []
    assert "reparametrized" in smoothed.weight_pairs_missing
    with pytest.raises(NotApplicable, match="reparametrized"):
        smoothed.limits()
    plain = evaluation(run(copy.deepcopy(model), data(0), smooth=False))
    assert REPARAMETRIZED not in plain.compressed.info
    assert len(plain.coded_pairs) == 3 and plain.limits()["model"]["rate"] > 0


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_a_reloaded_artifact_is_the_model_that_was_evaluated(mode: str, tmp_path: Any) -> None:
    """The runner saves the artifact and evaluates ``module(fresh=False)``; a user loads the artifact onto a
    freshly built dense model. Both must compute the same function: the A8 quantizers (static ranges or
    per-token ones) are part of what is stored, not of the in-memory skeleton."""
    from b2s_bench.execution import load_plugins

    torch.manual_seed(0)
    dense = OutlierBlock().eval()
    fresh = copy.deepcopy(dense)  # the architecture as a user builds it: no hooks, the dense weights
    comp = run(copy.deepcopy(dense), data(0), activation_mode=mode)
    comp.save(str(tmp_path / "artifact"))
    evaluated = comp.module(fresh=False)
    loaded = b2s.Compressed.load(str(tmp_path / "artifact"), fresh, load_plugins().code_types())
    test = data(5, 16)
    weights_only = b2s.Compressed(loaded.codes, loaded.raw, copy.deepcopy(dense), loaded.original_shapes)
    with torch.no_grad():
        want, got, unquantized = evaluated(test), loaded.module()(test), weights_only.module()(test)
    assert loaded.size().total_bits == comp.size().total_bits
    tolerance = 1e-6 * float(want.abs().max())
    assert float((got - want).abs().max()) <= tolerance
    assert float((unquantized - want).abs().max()) > 100 * tolerance  # the A8 quantizers matter here


@pytest.mark.parametrize(
    "stages",
    [
        [("smoothquant", {"activation_mode": "dynamic"})],
        [("smoothquant", {"activation_mode": "dynamic"}), ("entropy", {})],
        [("smoothquant", {})],
        [("awq", {"alpha_grid": 4, "search_tokens": 256, "clip_tokens": 64})],
    ],
    ids=["dynamic", "dynamic+entropy", "static", "awq"],
)
def test_a_llama_style_decoders_reloaded_artifact_is_the_evaluated_model(stages: list[Any], tmp_path: Any) -> None:
    """The zoo's LLaMA-style decoder (RMSNorm the scales fold into, SwiGLU, RoPE): smoothquant in both modes,
    as the first stage of a pipeline too (the entropy stage keeps the quantizers), and awq (folds, stored
    scales): the artifact loaded onto a freshly built decoder computes the logits that were evaluated."""
    from b2s_bench_plugins.sources.zoo_lm_net import TinyLlama

    from b2s_bench.execution import load_plugins
    from b2s_bench.execution.cell import apply_stage

    plugins = load_plugins()

    def decoder() -> nn.Module:
        torch.manual_seed(0)
        return TinyLlama(vocab=64, dim=32, layers=2, heads=2, hidden=64, context=16).eval()

    tokens = torch.randint(0, 64, (32, 16), generator=torch.Generator().manual_seed(1))
    context = b2s.Context(seed=0, track="calibration", input_shape=(16,), calibration=lambda n: tokens[:n])
    (first, settings), *later = stages
    spec = plugins.compressors.get(first)
    comp = spec.compress(decoder(), b2s.build_config(spec.config, {"calibration_samples": 32, **settings}, owner=first), context)
    for name, later_settings in later:
        stage = plugins.compressors.get(name)
        comp = apply_stage(comp, stage, b2s.build_config(stage.config, later_settings, owner=name), context)
    assert comp.info.get("stages", [comp.info])[0].get("reparametrized")  # scales were folded into the norms
    comp.save(str(tmp_path / "artifact"))
    loaded = b2s.Compressed.load(str(tmp_path / "artifact"), decoder(), plugins.code_types())
    test = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = comp.module(fresh=False)(test), loaded.module()(test)
    assert loaded.size().total_bits == comp.size().total_bits
    assert loaded.token_activations == comp.token_activations
    assert len(comp.token_activations) == (15 if settings.get("activation_mode") == "dynamic" else 0)  # 7 a block, the head
    assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())
