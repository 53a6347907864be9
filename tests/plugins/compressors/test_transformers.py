"""Every registered compressor on transformers (issue 17: the paper's models include Swin-T): on
random-init timm ViT-Tiny and Swin-T, each either compresses (ratio > 1, finite output, its target
met) or is not applicable with a reason (``NotApplicableError``, or coverage under the core's
minimum, which the runner records as not-applicable with :func:`coverage_reason`).

The default tests build the same timm architectures at test size with each compressor's ``quick``
settings; the full-size ViT-Tiny and Swin-T matrix is ``slow``. The matrix iterates the registry, so
a compressor added later is covered once registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from helpers import image_context, small_swin, small_vit
from torch import nn

import b2s_bench as b2s
from b2s_bench import Context, NotApplicableError, build_config
from b2s_bench.compression.coverage import coverage, coverage_reason
from b2s_bench.execution import load_plugins
from b2s_bench.execution.cell import apply_stage

pytest.importorskip("timm")

COMPRESSORS = load_plugins().compressors.names()

#: model -> (the model, a smaller student of its family for distillation)
SMALL: dict[str, tuple[Callable[[], nn.Module], Callable[[], nn.Module]]] = {
    "vit": (small_vit, lambda: small_vit(seed=1, depth=1, embed_dim=48)),
    "swin": (small_swin, lambda: small_swin(seed=1, embed_dim=24)),
}

#: settings beside ``quick`` that this issue made behave on transformers (checked where registered)
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "prune": [{"method": "channel", "sparsity": 0.25}],
    "quantize": [{"bits": 4, "bias_correction": "bn"}, {"bits": 4, "bias_correction": "synthetic"}],
    "nern": [{"permutation": "crossfilter", "similarity": "cosine"}],
    "hypercompress": [{"rect_l": "auto", "set_loss_limit": True}],
    # random-init weights are full rank: energy 0.95 keeps them dense (not applicable by coverage)
    "lowrank": [{"target_ratio": 2.0}],
}


def _context(model: Callable[[], nn.Module], student: Callable[[], nn.Module], size: int, classes: int) -> Context:
    ctx = image_context(model, size, classes)
    ctx.build_model = lambda name: student()
    return ctx


def outcome(name: str, settings: dict[str, Any], model: Callable[[], nn.Module], ctx: Context) -> str:
    """``"compressed"`` or ``"not applicable: <reason>"``; fails on anything else."""
    spec = load_plugins().compressors.get(name)
    config = build_config(spec.config, {**spec.quick, **settings}, owner=name)
    try:
        comp = spec.compress(model(), config, ctx)
    except NotApplicableError as e:
        assert e.reason.strip(), f"{name}: NotApplicableError without a reason"
        if spec.recode is None:
            return f"not applicable: {e.reason}"
        # a later stage (entropy coding): it must work after a quantizer
        quantize = load_plugins().compressors.get("quantize")
        first = quantize.compress(model(), build_config(quantize.config, {"bits": 4}, owner="quantize"), ctx)
        comp = apply_stage(first, spec, config, ctx)
        assert comp.size().total_bits < first.size().total_bits, f"{name}: recoding 4-bit codes saved nothing"
    x = ctx.example_input(2)
    with torch.no_grad():
        dense, out = model()(x), comp.module()(x)
    assert out.shape == dense.shape and bool(torch.isfinite(out).all()), f"{name}: the compressed model's output is broken"
    reason = coverage_reason(coverage(comp, model()))
    if reason is not None:
        return f"not applicable: {reason}"
    size = comp.size()
    assert size.baseline_bits > size.total_bits, f"{name} {settings}: ratio {size.baseline_bits / size.total_bits:.3f}, not > 1"
    target = spec.target(config, comp, model()) if spec.target else None
    assert target is None or target.met, f"{name} {settings}: {target.reason()}"
    return "compressed"


def _case_id(value: Any) -> str:
    return value if isinstance(value, str) else ",".join(f"{k}={x}" for k, x in value.items()) or "quick"


def _cases() -> list[tuple[str, dict[str, Any]]]:
    cases: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in COMPRESSORS]
    return cases + [(name, v) for name, variants in VARIANTS.items() if name in COMPRESSORS for v in variants]


@pytest.mark.parametrize("family", sorted(SMALL))
@pytest.mark.parametrize(("name", "settings"), _cases(), ids=_case_id)
def test_every_compressor_compresses_a_transformer_or_says_why_not(family: str, name: str, settings: dict[str, Any]) -> None:
    model, student = SMALL[family]
    result = outcome(name, settings, model, _context(model, student, 32, 10))
    assert result == "compressed" or result.startswith("not applicable: ")


def test_what_does_not_apply_to_a_transformer_says_so() -> None:
    """The expected refusals, and their reasons, for the built-ins this issue touched."""
    model, student = SMALL["vit"]
    ctx = _context(model, student, 32, 10)
    assert "this model has none" in outcome("nern", {}, model, ctx)  # NeRN predicts k×k conv kernels
    synthetic = outcome("quantize", {"bits": 4, "bias_correction": "synthetic"}, model, ctx)
    assert "no BatchNorm" in synthetic and "LayerNorm" in synthetic  # BN-statistics synthesis
    assert outcome("prune", {"method": "channel", "sparsity": 0.25}, model, ctx) == "compressed"


def test_bn_bias_correction_on_a_layernorm_model_is_a_recorded_skip_with_its_reason() -> None:
    spec = load_plugins().compressors.get("quantize")
    config = build_config(spec.config, {**spec.quick, "bits": 4, "bias_correction": "bn"}, owner="quantize")
    comp = spec.compress(small_swin(), config, image_context(small_swin))
    assert comp.info["bias_correction"]["corrected"] == []
    (caveat,) = comp.info["caveats"]
    assert caveat["kind"] == b2s.INEFFECTIVE
    assert "this model has no BatchNorm (it normalises with LayerNorm), whose statistics bn needs" in caveat["message"]


FULL = {
    "vit_tiny": ("vit_tiny_patch16_224", {"depth": 2, "embed_dim": 96, "num_heads": 3}),
    "swin_t": ("swin_tiny_patch4_window7_224", {"depths": (1, 1, 1, 1), "embed_dim": 48}),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FULL))
@pytest.mark.parametrize(("name", "settings"), _cases(), ids=_case_id)
def test_full_size_vit_tiny_and_swin_t(family: str, name: str, settings: dict[str, Any]) -> None:
    """The paper-size architectures (224x224 inputs, 1000 classes, random init, no download)."""
    import timm

    arch, student_size = FULL[family]

    def model() -> nn.Module:
        torch.manual_seed(0)
        return timm.create_model(arch, pretrained=False).eval()

    def student() -> nn.Module:
        torch.manual_seed(1)
        return timm.create_model(arch, pretrained=False, **student_size).eval()

    ctx = _context(model, student, 224, 1000)
    result = outcome(name, settings, model, ctx)
    assert result == "compressed" or result.startswith("not applicable: ")
