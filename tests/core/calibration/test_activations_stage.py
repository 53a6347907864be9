"""The activations stage: W/A quantization for any weight compressor, set once for a whole suite."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from torch import nn

import b2s_bench as b2s
from b2s_bench.calibration import (
    ActivationSettings,
    apply_activations,
    bn_activation_ranges,
    bn_input_models,
)
from b2s_bench.errors import SuiteError
from b2s_bench.plugins import Plugins
from b2s_bench.suites.cells import expand
from b2s_bench.suites.load import load_suite
from b2s_bench.testing import tiny_context, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_settings_validate_and_follow_squants_rule_for_the_first_and_last_input() -> None:
    with pytest.raises(b2s.ConfigError, match="bits must be an integer in 2..16"):
        ActivationSettings(bits=1)
    with pytest.raises(b2s.ConfigError, match="ranges must be one of bn, synthetic, calibration"):
        ActivationSettings(ranges="data")  # type: ignore[arg-type]
    s = ActivationSettings(bits=6)
    assert s.layer_bits(["a", "b", "c"]) == {"a": None, "b": 6, "c": 8}
    assert ActivationSettings(bits=4, first_input_bits=8, last_input_bits=None).layer_bits(["a", "b"]) == {"a": 8, "b": None}
    assert ActivationSettings(ranges="bn", fallback="skip").track == "data-free"
    assert ActivationSettings(ranges="bn").track == "synthetic"  # layers without a BN before them use synthetic ranges
    assert ActivationSettings(ranges="calibration").track == "calibration"


class _BNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.bn(self.conv1(x))))


def test_bn_ranges_come_from_the_gaussian_model_of_the_input_through_its_activation() -> None:
    model = _BNModel().eval()
    with torch.no_grad():
        model.bn.bias.copy_(torch.tensor([0.0, 1.0, -5.0, 2.0]))
        model.bn.weight.copy_(torch.tensor([1.0, 0.5, 0.1, 2.0]))
    models, skipped = bn_input_models(model, ["conv1", "conv2"])
    assert set(models) == {"conv2"} and "the model input" in skipped["conv1"]
    draws = models["conv2"].sample(20000, torch.Generator().manual_seed(0))
    assert (draws >= 0).all()  # through the ReLU
    assert draws[1].mean().item() == pytest.approx(1.0, abs=0.02)  # N(1, 0.5²) is almost all positive
    ranges, _ = bn_activation_ranges(model, ["conv2"], 8, "minmax", torch.Generator().manual_seed(0), keep=1 << 16)
    lo, hi = ranges["conv2"]
    assert lo == 0.0
    assert 2.0 + 3.5 * 2.0 < hi < 2.0 + 6.0 * 2.0  # the widest channel, N(2, 2²), sets the top: 16,384 draws of it


def test_the_stage_quantizes_every_input_but_the_first_and_counts_its_metadata() -> None:
    model = tiny_model()
    ctx = tiny_context()
    compressed = b2s.Compressed.from_codes(model, {})
    names = [k.rpartition(".")[0] for k in b2s.weight_layers(model)]
    out = apply_activations(compressed, model, ActivationSettings(bits=6, ranges="bn", fallback="skip"), ctx)
    facts = out.info["activations"]
    assert names[0] in facts["full_precision"] and names[0] not in out.activations
    assert out.activation_bits == 6
    if names[-1] in out.activations:
        assert out.activation_layer_bits == {names[-1]: 8}
    assert out.size().breakdown.metadata - compressed.size().breakdown.metadata == 64 * len(out.activations) + 8 * len(
        out.activation_layer_bits
    )
    x = ctx.example_input(4)
    dense, quantized = model(x), out.module()(x)
    assert not torch.equal(dense, quantized) and torch.allclose(dense, quantized, atol=0.5 * dense.abs().max().item())
    # with synthetic fallback, every quantized layer gets a range
    full = apply_activations(compressed, model, ActivationSettings(bits=6, samples=8, synthetic_iterations=2), ctx)
    assert set(full.activations) == set(names[1:])


def test_the_stage_uses_the_methods_own_inputs_and_refuses_a_second_set_of_ranges() -> None:
    model = tiny_model()
    ctx = tiny_context()
    compressed = b2s.Compressed.from_codes(model, {})
    calls: list[int] = []

    def own() -> torch.Tensor:
        calls.append(1)
        return torch.randn(8, *ctx.input_shape, generator=torch.Generator().manual_seed(1))

    out = apply_activations(compressed, model, ActivationSettings(bits=8, ranges="synthetic"), ctx, own)
    assert calls == [1] and out.info["activations"]["inputs"]["kind"] == "the method's own synthetic inputs"
    with pytest.raises(ValueError, match="already quantizes activations"):
        apply_activations(out, model, ActivationSettings(bits=8), ctx)


def test_the_artifact_keeps_each_layers_bits(tmp_path: Path) -> None:
    model = tiny_model()
    ctx = tiny_context()
    out = apply_activations(
        b2s.Compressed.from_codes(model, {}), model, ActivationSettings(bits=4, samples=8, synthetic_iterations=2), ctx
    )
    out.save(str(tmp_path / "a"))
    back = b2s.Compressed.load(str(tmp_path / "a"), tiny_model(), {})
    assert back.activations == out.activations and back.activation_layer_bits == out.activation_layer_bits
    x = ctx.example_input(2)
    assert torch.equal(back.module()(x), out.module()(x))


SUITE = """
suite: wa
models: [{name: tiny:cnn}]
dataset: {name: random, n: 32}
activations: {bits: 6, samples: 8, synthetic_iterations: 2}
compressors:
  - name: quantize
    bits: 6
  - name: quantize
    bits: 4
    activations: {ranges: calibration, bits: 4}
  - name: prune
    sparsity: 0.5
    activations: null
  - pipeline: [{name: prune, sparsity: 0.5}, {name: quantize, bits: 8}]
metrics: [top1, agreement, bits]
"""


def test_a_suites_activations_reach_every_entry_its_label_its_track_and_its_id(
    write_suite: Callable[..., Path], plugins: Plugins
) -> None:
    suite = load_suite(write_suite(SUITE), plugins)
    cells = {c.label: c for c in expand(suite, plugins, "cpu")}
    assert set(cells) == {
        "dense",
        "quantize(bits=6) W6A6",
        "quantize(bits=4) W4A4",
        "prune(sparsity=0.5)",
        "prune(sparsity=0.5) > quantize(bits=8) W8A6",
    }
    assert cells["quantize(bits=4) W4A4"].activations.ranges == "calibration"
    assert cells["quantize(bits=4) W4A4"].activations.samples == 8  # the suite's other fields stay
    assert cells["quantize(bits=4) W4A4"].track == "calibration"
    assert cells["prune(sparsity=0.5)"].activations is None and "activations" not in cells["prune(sparsity=0.5)"].fingerprint
    no_stage = load_suite(
        write_suite(SUITE.replace("activations: {bits: 6, samples: 8, synthetic_iterations: 2}\n", ""), "b.yaml"), plugins
    )
    plain = {c.label: c.id for c in expand(no_stage, plugins, "cpu")}
    assert plain["prune(sparsity=0.5)"] == cells["prune(sparsity=0.5)"].id  # without the stage, ids do not change
    assert plain["quantize(bits=6)"] != cells["quantize(bits=6) W6A6"].id


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("activations: {bits: 40}\n", "activations.bits"),
        ("activations: {ranges: data}\n", "activations.ranges"),
    ],
)
def test_bad_activation_settings_name_their_key(
    write_suite: Callable[..., Path], plugins: Plugins, text: str, where: str
) -> None:
    body = SUITE.replace("activations: {bits: 6, samples: 8, synthetic_iterations: 2}\n", text)
    with pytest.raises(SuiteError, match=where.replace(".", r"\.")):
        load_suite(write_suite(body), plugins)


def test_activations_on_a_pipeline_stage_is_refused_with_the_fix(write_suite: Callable[..., Path], plugins: Plugins) -> None:
    body = SUITE.replace("{name: quantize, bits: 8}]", "{name: quantize, bits: 8, activations: {bits: 4}}]")
    with pytest.raises(SuiteError, match="put `activations:` on the pipeline entry"):
        load_suite(write_suite(body), plugins)


def test_a_run_records_the_stage_and_its_facts(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    path = write_suite(SUITE)
    out = tmp_path / "run"
    assert run_cli("run", str(path), "--out", str(out), "-k", "W6A6") == 0
    recs = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    rec = next(r for r in recs if r["label"] == "quantize(bits=6) W6A6")
    assert rec["status"] == "ok", rec.get("error")
    assert rec["compressor"]["activations"]["bits"] == 6
    facts = rec["details"]["activations"]
    assert facts["bits"] == 6 and facts["quantized_inputs"] >= 1 and facts["full_precision"]


def test_ranges_from_batchnorm_on_a_model_without_it_are_not_applicable_with_the_fix() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(8, 3)).eval()
    ctx = b2s.Context(input_shape=(3, 2, 2), num_classes=3)
    compressed = b2s.Compressed.from_codes(model, {})
    for ranges in ("bn", "synthetic"):
        with pytest.raises(b2s.NotApplicableError, match="use `ranges: calibration`"):
            apply_activations(compressed, model, ActivationSettings(bits=8, ranges=ranges), ctx)
    out = apply_activations(compressed, model, ActivationSettings(bits=8, fallback="skip"), ctx)
    assert out.activations == {} and out.info["activations"]["full_precision"] == ["1", "3", "4"]
    assert set(out.info["activations"]["fallback"]["layers"]) == {"3", "4"}
    assert [c["kind"] for c in out.info["caveats"]] == [b2s.INEFFECTIVE]  # the row is marked [no effect]


def test_per_token_quantizers_are_counted_saved_rebuilt_and_never_doubled(tmp_path: Path) -> None:
    """``Compressed(token_activations=...)``: the core's dynamic per-token activation quantizer. No range is
    stored; which layers and their bits are (a 32-bit header field a layer); the artifact keeps them and a
    freshly built model loaded from it computes what the in-memory one did; a convolution's token is a
    pixel's channel vector; one quantizer a layer however often the model is built; a layer gets a static
    range or a per-token quantizer, never both, and the activations stage refuses to add ranges on top."""
    ctx = tiny_context()
    names = [k.rpartition(".")[0] for k in b2s.weight_layers(tiny_model())]
    conv, head = names[1], names[-1]
    plain = b2s.Compressed.from_codes(tiny_model(), {})
    comp = b2s.Compressed(plain.codes, plain.raw, tiny_model(), plain.original_shapes, token_activations={conv: 4, head: 8})
    assert comp.size().total_bits == plain.size().total_bits + 2 * 32
    comp.save(str(tmp_path / "a"))
    evaluated = comp.module(fresh=False)
    back = b2s.Compressed.load(str(tmp_path / "a"), tiny_model(1), {})  # other weights: only the architecture counts
    assert back.token_activations == {conv: 4, head: 8} and back.size().total_bits == comp.size().total_bits
    x = ctx.example_input(4)
    rebuilt = back.module()
    seen: dict[str, torch.Tensor] = {}
    rebuilt.get_submodule(conv).register_forward_hook(lambda m, a, o: seen.__setitem__("x", a[0]))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), evaluated(x)) and not torch.equal(evaluated(x), plain.module()(x))
    steps = seen["x"].abs().amax(1, keepdim=True) / 7  # 4 bits, per pixel over its channels
    levels = seen["x"] / steps.clamp(min=1e-5)
    assert torch.allclose(levels, levels.round(), atol=1e-4) and float(levels.abs().max()) <= 8
    comp.module(fresh=False)  # built into the skeleton twice: still one quantizer a layer
    hooks = [type(h).__name__ for m in comp.skeleton.modules() for h in m._forward_pre_hooks.values()]
    assert sorted(hooks) == ["_TokenQuantizer", "_TokenQuantizer"]
    with pytest.raises(ValueError, match="quantized twice"):
        b2s.Compressed(
            plain.codes, plain.raw, tiny_model(), plain.original_shapes, {}, None, None, {head: (-1.0, 1.0)}, 8, None, {head: 8}
        )
    with pytest.raises(ValueError, match="token_activations"):
        b2s.Compressed(plain.codes, plain.raw, tiny_model(), plain.original_shapes, token_activations={head: 1})
    with pytest.raises(ValueError, match="already quantizes activations"):
        apply_activations(comp, tiny_model(), ActivationSettings(bits=8), ctx)


class _Reweighted(nn.Module):
    """A deployed form that runs the layer's computation without calling the layer (as Big2Small's
    INRLayer does): hooks left on the replaced layer would never run."""

    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.layer.weight, self.layer.bias)


@dataclasses.dataclass
class _DeployedCode(b2s.StoredTensorCode):
    kind = "test.deployed"

    def deployed(self, layer: nn.Module) -> nn.Module | None:
        assert isinstance(layer, nn.Linear)
        return _Reweighted(layer)


def test_a_deployed_model_keeps_its_activation_quantizers() -> None:
    """The activation quantizers go on a code's deployed module (its input is the layer's input), so the
    deployed model (what latency is timed on) quantizes like the evaluated one."""
    model = tiny_model()
    head = [k for k in b2s.weight_layers(model)][-1]
    comp = b2s.Compressed.from_codes(model, {head: _DeployedCode(model.get_submodule(head.rpartition(".")[0]).weight)})
    name = head.rpartition(".")[0]
    x = tiny_context().example_input(4)
    for quantized in (
        comp.with_activations({name: (-0.5, 0.5)}, 2),
        b2s.Compressed(comp.codes, comp.raw, comp.skeleton, comp.original_shapes, token_activations={name: 2}),
    ):
        with torch.no_grad():
            evaluated, deployed, unquantized = quantized.module()(x), quantized.module(deployed=True)(x), comp.module()(x)
        assert isinstance(quantized.module(deployed=True).get_submodule(name), _Reweighted)
        assert float((deployed - evaluated).abs().max()) < 1e-5 * float(evaluated.abs().max())
        assert float((unquantized - evaluated).abs().max()) > 1e-2 * float(evaluated.abs().max())
