"""The ``hf:`` source on a tiny LLaMA saved to tmp_path: loads safetensors from a folder with its
tokenizer, returns the transformers model's logits, refuses pickles and says what is missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from b2s_bench import MissingPrerequisite, UserError
from b2s_bench.sources import ModelRequest

pytest.importorskip("transformers")

from b2s_bench_plugins.sources import hf  # noqa: E402

WORDS = "the quick brown fox jumps over a lazy dog and then the dog sleeps".split()


def save_tiny_llama(folder: Path, safetensors: bool = True) -> Any:
    """A 2-block LlamaForCausalLM (width 32, grouped-query attention) and a word-level tokenizer, as
    ``save_pretrained`` writes them; with ``safetensors=False`` the weights are a PyTorch pickle instead
    (``pytorch_model.bin``, what older checkpoints ship)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(dict.fromkeys(WORDS))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    if not safetensors:
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    return model


def test_a_local_folder_loads_with_its_tokenizer_and_gives_the_models_logits(tmp_path: Path) -> None:
    reference = save_tiny_llama(tmp_path)
    request = ModelRequest("hf:tiny-llama", weights=str(tmp_path))
    assert hf.SOURCE.problems is not None and hf.SOURCE.problems(request) == []
    loaded = hf.SOURCE.build(request)
    assert loaded.input_shape == (64,) and loaded.num_classes == reference.config.vocab_size
    tokens = loaded.data_config["tokenize"]("the lazy dog jumps")
    assert tokens == [1, 8, 9, 5]  # the word-level vocabulary's ids, no BOS/EOS added
    x = torch.tensor([tokens, tokens[::-1]])
    with torch.no_grad():
        assert torch.equal(loaded.module(x), reference(input_ids=x).logits)
    linear = [n for n, m in loaded.module.named_modules() if isinstance(m, torch.nn.Linear)]
    assert "model.model.layers.0.self_attn.q_proj" in linear and "model.lm_head" in linear
    # the fingerprint names each safetensors file's digest, and changes when the weights do
    assert hf.SOURCE.fingerprint is not None
    before = hf.SOURCE.fingerprint(request)
    assert before.startswith("float32:model.safetensors:")
    with torch.no_grad():
        reference.model.layers[0].mlp.up_proj.weight.add_(1.0)
    reference.save_pretrained(tmp_path)
    assert hf.SOURCE.fingerprint(request) != before


def test_pickled_weights_are_refused_with_the_fix(tmp_path: Path) -> None:
    save_tiny_llama(tmp_path, safetensors=False)
    request = ModelRequest("hf:tiny-llama", weights=str(tmp_path))
    assert hf.SOURCE.problems is not None
    (problem,) = hf.SOURCE.problems(request)
    assert "pytorch_model.bin" in problem and "safetensors only" in problem and "weights: OUT" in problem
    with pytest.raises(MissingPrerequisite, match="safetensors only"):
        hf.SOURCE.build(request)


def test_what_is_missing_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hf.SOURCE.problems is not None
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read when a lookup runs
    # neither a folder nor the hub: a mistake in the suite, naming both ways
    (mistake,) = hf.SOURCE.problems(ModelRequest("hf:org/model"))
    assert "weights: FOLDER" in mistake and "pretrained: true" in mistake
    with pytest.raises(UserError, match="weights: FOLDER"):
        hf.SOURCE.build(ModelRequest("hf:org/model"))
    # a hub model not in the cache: --download is the fix
    (missing,) = hf.SOURCE.problems(ModelRequest("hf:org/model", pretrained=True))
    assert "not in the local hub cache" in missing and "--download" in missing
    (folder,) = hf.SOURCE.problems(ModelRequest("hf:x", weights=str(tmp_path / "nowhere")))
    assert "no folder" in folder
    (option,) = hf.SOURCE.problems(ModelRequest("hf:x", weights=str(tmp_path), options={"dtype": "int3"}))
    assert "dtype" in option and "bfloat16" in option


SUITE = """
suite: hf-test
seed: 0
device: cpu
models:
  - name: hf:tiny-llama
    weights: {folder}
    dataset: {{name: wikitext-2, root: {data}, length: 8}}
compressors:
  - {{name: quantize, bits: 4}}
  - {{name: gptq, bits: 4, group_size: 16, calibration_samples: 4}}
metrics: [perplexity, token_agreement, token_kl, bits]
runtime: {{weight_limits: false}}
"""


def test_a_suite_runs_an_hf_model_on_wikitext_with_its_tokenizer(tmp_path: Path) -> None:
    from helpers import run_cli

    save_tiny_llama(tmp_path / "model")
    wiki = tmp_path / "data" / "wikitext-2-raw-v1"
    wiki.mkdir(parents=True)
    article = " = {title} = \n\n " + " ".join(WORDS * 3) + " \n"
    for split in ("test", "train"):
        (wiki / f"wiki.{split}.raw").write_text("".join(article.format(title=f"{split} {i}") for i in range(4)))
    suite = tmp_path / "hf.yaml"
    suite.write_text(SUITE.format(folder=tmp_path / "model", data=tmp_path / "data"))
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--no-progress", "--quiet", "--workers", "1") == 0
    records = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    assert len(records) == 3 and all(r["status"] == "ok" for r in records)
    for r in records:
        assert r["dataset"]["task"] == "language-modeling" and r["model"]["num_classes"] == len(set(WORDS)) + 1
        assert r["metrics"]["perplexity"]["value"] > 1


def test_pretrained_loads_from_the_hub_cache_and_names_blobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub cache's layout (refs/main -> snapshots/COMMIT/ files linking into blobs/SHA256): found
    offline, and the fingerprint is the blobs' names (their SHA-256), read without hashing 13 GB."""
    import hashlib

    repo = tmp_path / "hub" / "models--org--tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    save_tiny_llama(tmp_path / "saved")
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in (tmp_path / "saved").iterdir():
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        (repo / "blobs" / digest).write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(Path("../../blobs") / digest)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read when a lookup runs
    request = ModelRequest("hf:org/tiny", pretrained=True)
    assert hf.SOURCE.problems is not None and hf.SOURCE.problems(request) == []
    assert hf.SOURCE.fingerprint is not None
    weights = hashlib.sha256((tmp_path / "saved" / "model.safetensors").read_bytes()).hexdigest()
    assert f"model.safetensors:{weights[:16]}" in hf.SOURCE.fingerprint(request)
    loaded = hf.SOURCE.build(request)
    assert loaded.num_classes == len(set(WORDS)) + 1
    assert "org/tiny" in hf.SOURCE.list_models(None)
