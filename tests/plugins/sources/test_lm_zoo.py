"""The zoo language model: a LLaMA-style decoder (RMSNorm, rotary attention, SwiGLU, every projection an
nn.Linear), its shipped weights loaded and verified without training, other recipes trained on first
use and cached, and --retrain honoured."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from helpers import fake_pydoc
from torch import nn

from b2s_bench import MissingPrerequisite
from b2s_bench.sources import ModelRequest

from b2s_bench_plugins.data import text  # isort: skip
from b2s_bench_plugins.sources import zoo, zoo_lm  # isort: skip
from b2s_bench_plugins.sources.zoo_lm_net import TinyLlama  # isort: skip

LM = ModelRequest("zoo-lm:tiny-llama")


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def train(recipe: zoo_lm.LMRecipe, progress: bool | None = None) -> dict[str, torch.Tensor]:
        raise AssertionError(f"trained {recipe}")

    monkeypatch.setattr(zoo_lm, "train", train)
    monkeypatch.setattr(zoo, "_retrain", False)
    monkeypatch.setattr(zoo, "_retrained", set())


def test_the_network_is_llama_style_causal_and_all_linear() -> None:
    recipe = zoo_lm.RECIPES["tiny-llama"]
    model = zoo_lm.architecture(recipe)
    assert sum(p.numel() for p in model.parameters()) == 2_504_448
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 7 * recipe.layers + 1 and "lm_head" in linears and "blocks.0.mlp.gate_proj" in linears
    assert sum(isinstance(m, nn.RMSNorm) for m in model.modules()) == 2 * recipe.layers + 1
    assert model.lm_head.weight.data_ptr() != model.embed.weight.data_ptr()  # untied
    assert not any("rope" in k for k in model.state_dict())  # the rotary tables are derived, not stored
    small = TinyLlama(256, 32, 2, 4, 64, 16).eval()
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[:, 10] = (y[:, 10] + 1) % 256
    with torch.no_grad():
        a, b = small(x), small(y)
    assert a.shape == (2, 16, 256)
    assert torch.equal(a[:, :10], b[:, :10]) and not torch.allclose(a[:, 10:], b[:, 10:])  # causal
    with pytest.raises(TypeError, match="token ids"):
        small(x.float())
    with pytest.raises(ValueError, match="context"):
        small(torch.zeros(1, 17, dtype=torch.int64))


@pytest.mark.usefixtures("no_training")
def test_the_shipped_weights_load_verified_without_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = zoo_lm.recipe_for(LM)
    shipped = zoo_lm.SHIPPED[recipe.key()]
    assert shipped.name == "tiny-llama" and shipped.seed == 0
    assert zoo_lm.SOURCE.problems is not None and zoo_lm.SOURCE.problems(LM) == []
    loaded = zoo_lm.SOURCE.build(LM)
    assert loaded.input_shape == (128,) and loaded.num_classes == 256 and loaded.input_vocab == 256
    assert loaded.label_space == text.BYTES and loaded.checkpoint == f"zoo-lm:tiny-llama@{recipe.key()}"
    assert zoo_lm.SOURCE.fingerprint is not None
    assert zoo_lm.SOURCE.fingerprint(LM) == f"recipe:{recipe.key()}:sha256:{shipped.sha256[:16]}"
    if text.pydoc_root(None) is not None:  # the corpus (python3-doc) is here: the weights model it
        ppl = zoo_lm.perplexity(recipe, dict(loaded.module.state_dict()), limit=48)
        assert ppl == pytest.approx(shipped.perplexity, rel=0.3) and ppl < 8  # a uniform guess: 256
    # a damaged file is an error naming the fix, never a silent retrain
    damaged = tmp_path / "zoo_weights"
    shutil.copytree(zoo.WEIGHTS_DIR, damaged)
    path = damaged / f"{recipe.key()}.safetensors"
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", damaged)
    with pytest.raises(MissingPrerequisite, match="--retrain"):
        zoo_lm.SOURCE.build(LM)
    (problem,) = zoo_lm.SOURCE.problems(LM)
    assert "damaged" in problem


def test_another_recipe_trains_on_first_use_and_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B2S_PYDOC", str(fake_pydoc(tmp_path / "_sources")))
    monkeypatch.setattr(zoo, "_retrain", False)
    options = {"dim": 16, "hidden": 32, "layers": 1, "heads": 2, "context": 16, "steps": 3, "batch_size": 4}
    request = ModelRequest("zoo-lm:tiny-llama", options=options)
    recipe = zoo_lm.recipe_for(request)
    assert recipe.key() not in zoo_lm.SHIPPED and recipe == dataclasses.replace(zoo_lm.RECIPES["tiny-llama"], **options)
    assert zoo_lm.SOURCE.fingerprint is not None and zoo_lm.SOURCE.fingerprint(request).endswith("untrained")
    calls = []
    real_train = zoo_lm.train
    monkeypatch.setattr(zoo_lm, "train", lambda r, progress=None: calls.append(r) or real_train(r, progress=False))
    assert zoo_lm.SOURCE.prepare is not None
    zoo_lm.SOURCE.prepare(request)
    zoo_lm.SOURCE.prepare(request)
    assert calls == [recipe]  # trained once, then the cache's file
    first = zoo_lm.SOURCE.build(request).module.state_dict()
    assert zoo_lm.SOURCE.fingerprint(request).startswith(f"recipe:{recipe.key()}:sha256:")
    again = real_train(recipe, progress=False)
    assert all(torch.equal(first[k], again[k]) for k in again)  # seeded: the same weights on this machine
    with pytest.raises(Exception, match="heads"):
        zoo_lm.recipe_for(ModelRequest("zoo-lm:tiny-llama", options={"heads": 3}))


@pytest.mark.slow
def test_a_retrain_here_lands_near_the_shipped_perplexity() -> None:
    """Trains the full recipe (17 min on one thread of a busy 2-core machine): another machine's
    training rounds differently, and must land within 3 % of the shipped file's test perplexity."""
    if text.pydoc_root(None) is None:
        pytest.skip(f"needs the python-docs corpus: {text.PYDOC_WHERE}")
    recipe = zoo_lm.RECIPES["tiny-llama"]
    shipped = zoo_lm.SHIPPED[recipe.key()]
    ppl = zoo_lm.perplexity(recipe, zoo_lm.train(recipe, progress=False))
    assert ppl == pytest.approx(shipped.perplexity, rel=0.03), (ppl, shipped.perplexity)
