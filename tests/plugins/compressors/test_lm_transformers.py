"""Every registered compressor on a LLaMA-style language model (issue 19): the zoo LM's architecture at
test size (2 blocks of width 64, RMSNorm, rotary attention, SwiGLU, a 64-token vocabulary), random
init, with token-id calibration and training data. Each compresses (ratio > 1, finite logits, its
target met) or is not applicable with a reason, like the vision transformers of test_transformers.py;
the matrix iterates the registry, so a compressor added later is covered once registered."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_transformers import outcome
from torch import nn

from b2s_bench import Context
from b2s_bench.execution import load_plugins

from b2s_bench_plugins.sources.zoo_lm_net import TinyLlama  # isort: skip

COMPRESSORS = load_plugins().compressors.names()
VOCAB, T = 64, 16


def tiny_lm(seed: int = 0, dim: int = 64, layers: int = 2) -> TinyLlama:
    """Gaussian weights (std 0.02, LLaMA's init), not nn.Linear's uniform default: a uniform tensor's
    4-bit codes have nothing for an entropy coder to gain, which trained LLM weights do."""
    torch.manual_seed(seed)
    model = TinyLlama(VOCAB, dim, layers, 4, 2 * dim, T).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.02)
    return model


def lm_context(seed: int = 0) -> Context:
    """Token ids as calibration inputs (int64 N×T) and (inputs, next tokens) training batches."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (64, T + 1), generator=gen)
    x, y = tokens[:, :-1], tokens[:, 1:]
    return Context(
        seed=seed,
        input_shape=(T,),
        num_classes=VOCAB,
        input_vocab=VOCAB,
        calibration=lambda n: x[:n],
        training=lambda: [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)],
        build_model=lambda name: tiny_lm(1, dim=32, layers=1),
    )


#: settings beside ``quick`` that matter on a language model
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "quantize": [{"bits": 4, "bias_correction": "synthetic"}],
    "lowrank": [{"target_ratio": 2.0}],  # random-init weights are full rank: energy 0.95 keeps them dense
    "prune": [{"method": "channel", "sparsity": 0.25}],
}


def _cases() -> list[tuple[str, dict[str, Any]]]:
    cases: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in COMPRESSORS]
    return cases + [(name, v) for name, variants in VARIANTS.items() if name in COMPRESSORS for v in variants]


@pytest.mark.parametrize(("name", "settings"), _cases(), ids=lambda v: v if isinstance(v, str) else str(v or "quick"))
def test_every_compressor_compresses_the_language_model_or_says_why_not(name: str, settings: dict[str, Any]) -> None:
    result = outcome(name, settings, tiny_lm, lm_context())
    assert result == "compressed" or result.startswith("not applicable: ")


def test_token_inputs_and_what_cannot_apply_to_a_language_model() -> None:
    ctx = lm_context()
    x = ctx.example_input(3)
    assert x.dtype == torch.int64 and x.shape == (3, T) and 0 <= int(x.min()) and int(x.max()) < VOCAB
    assert torch.equal(x, ctx.example_input(3))  # seeded
    synthetic = outcome("quantize", {"bits": 4, "bias_correction": "synthetic"}, tiny_lm, ctx)
    assert synthetic.startswith("not applicable: ") and "token ids" in synthetic
    assert outcome("quantize", {"bits": 4}, tiny_lm, ctx) == "compressed"
    assert outcome("lowrank", {"target_ratio": 2.0}, tiny_lm, ctx) == "compressed"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "settings"), _cases(), ids=lambda v: v if isinstance(v, str) else str(v or "quick"))
def test_every_compressor_on_the_shipped_zoo_lm(name: str, settings: dict[str, Any]) -> None:
    """The shipped zoo-lm:tiny-llama itself (2.5M parameters, trained weights, context 128, bytes)."""
    from b2s_bench.sources import ModelRequest

    from b2s_bench_plugins.sources import zoo_lm  # isort: skip

    request = ModelRequest("zoo-lm:tiny-llama")
    weights = zoo_lm.SOURCE.build(request).module.state_dict()

    def model() -> nn.Module:
        built = zoo_lm.architecture(zoo_lm.recipe_for(request))
        built.load_state_dict(weights)
        return built.eval()

    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (32, 129), generator=gen)
    ctx = Context(
        input_shape=(128,),
        num_classes=256,
        input_vocab=256,
        calibration=lambda n: tokens[:n, :-1],
        training=lambda: [(tokens[i : i + 8, :-1], tokens[i : i + 8, 1:]) for i in range(0, 32, 8)],
        build_model=lambda name: zoo_lm.SOURCE.build_architecture("tiny-llama-small"),  # type: ignore[misc]
    )
    result = outcome(name, settings, model, ctx)
    assert result == "compressed" or result.startswith("not applicable: ")
