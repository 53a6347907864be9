"""The language-modeling task: per-window NLL, argmax tokens and next-token distributions; perplexity,
token agreement and token KL read them (exact KL for a small vocabulary, top-k for a large one); a
suite on the zoo LM runs end to end with intervals that resample documents."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fake_pydoc, run_cli
from torch import nn

from b2s_bench import Compressed
from b2s_bench.metrics import Evaluation
from b2s_bench.plugins import Plugins
from b2s_bench.sources import LoadedData, LoadedModel

from b2s_bench_plugins.evaluation import language  # isort: skip


class Table(nn.Module):
    """A bigram model: the logits of the next token are a row of a table (V×V), whatever came before."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(logits)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens]


def windows(n: int = 6, t: int = 5, vocab: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    seq = torch.randint(0, vocab, (n, t + 1), generator=torch.Generator().manual_seed(seed))
    return seq[:, :-1], seq[:, 1:]


def data_of(x: torch.Tensor, y: torch.Tensor) -> LoadedData:
    n = x.shape[0]
    return LoadedData(
        lambda bs: [(x[i : i + bs], y[i : i + bs]) for i in range(0, n, bs)],
        n,
        True,
        "windows",
        clusters=np.arange(n) // 2,
        task="language-modeling",
    )


def evaluation(plugins: Plugins, model: nn.Module, dense: nn.Module, data: LoadedData) -> Evaluation:
    task = plugins.tasks.get("language-modeling")
    vocab = int(next(dense.parameters()).shape[-1])
    return Evaluation(
        model,
        LoadedModel(dense, (5,), vocab, "table", input_vocab=vocab),
        Compressed.from_codes(model, {}),
        data,
        torch.device("cpu"),
        4,
        lambda: task.run(dense, data, torch.device("cpu"), 4),
        {"compress": 0.0},
        task=task,
    )


def test_outputs_and_metrics_on_a_small_vocabulary_are_exact(plugins: Plugins) -> None:
    vocab = 7
    gen = torch.Generator().manual_seed(1)
    dense_logits = torch.randn(vocab, vocab, generator=gen)
    comp_logits = dense_logits + 0.5 * torch.randn(vocab, vocab, generator=gen)
    dense, comp = Table(dense_logits), Table(comp_logits)
    x, y = windows(vocab=vocab)
    data = data_of(x, y)
    out = plugins.tasks.get("language-modeling").run(comp, data, torch.device("cpu"), 4)  # batches of 4 and 2
    assert set(out) == {"nll", "argmax", "logp", "vocab"} and out["logp"].shape == (6, 5, vocab)
    ce = nn.functional.cross_entropy(comp_logits[x].reshape(-1, vocab).double(), y.reshape(-1), reduction="none")
    assert torch.allclose(out["nll"], ce.reshape(6, 5).mean(1))
    ev = evaluation(plugins, comp, dense, data)
    ppl = plugins.metrics.get("perplexity").compute(ev)
    assert ppl == pytest.approx(math.exp(float(ce.mean())))
    assert math.exp(float(ev.per_example["perplexity"].double().mean())) == pytest.approx(ppl)  # exp_mean
    agree = plugins.metrics.get("token_agreement").compute(ev)
    same = comp_logits[x].argmax(-1) == dense_logits[x].argmax(-1)
    assert agree == pytest.approx(100 * float(same.double().mean()))
    assert ev.per_example["token_agreement"].shape == (6,)
    kl = plugins.metrics.get("token_kl").compute(ev)
    p, q = dense_logits[x].double().log_softmax(-1), comp_logits[x].double().log_softmax(-1)
    assert kl == pytest.approx(float((p.exp() * (p - q)).sum(-1).mean()))
    assert kl > 0 and plugins.metrics.get("token_kl").aggregate == "mean"
    assert plugins.metrics.get("perplexity").aggregate == "exp_mean"
    # the dense model against itself: perfect agreement, zero KL
    same_ev = evaluation(plugins, dense, dense, data)
    assert plugins.metrics.get("token_agreement").compute(same_ev) == 100.0
    assert plugins.metrics.get("token_kl").compute(same_ev) == pytest.approx(0.0, abs=1e-12)


def test_a_large_vocabulary_keeps_the_top_k_and_its_kl_bounds_the_full_one(
    plugins: Plugins, monkeypatch: pytest.MonkeyPatch
) -> None:
    vocab = 40
    monkeypatch.setattr(language, "EXACT_VOCAB", 16)
    monkeypatch.setattr(language, "TOP_K", 8)
    gen = torch.Generator().manual_seed(2)
    dense_logits = 3 * torch.randn(vocab, vocab, generator=gen)
    comp_logits = dense_logits + 0.3 * torch.randn(vocab, vocab, generator=gen)
    x, y = windows(vocab=vocab)
    data = data_of(x, y)
    out = language.run(Table(comp_logits), data, torch.device("cpu"), 4)
    assert set(out) == {"nll", "argmax", "topk_logp", "topk_index", "vocab"} and out["topk_logp"].shape == (6, 5, 8)
    assert int(out["vocab"]) == vocab and torch.equal(out["argmax"], out["topk_index"][..., 0])
    ev = evaluation(plugins, Table(comp_logits), Table(dense_logits), data)
    kl = plugins.metrics.get("token_kl").compute(ev)
    p, q = dense_logits[x].double().log_softmax(-1), comp_logits[x].double().log_softmax(-1)
    full = float((p.exp() * (p - q)).sum(-1).mean())
    assert 0 < kl and kl == pytest.approx(full, rel=0.5)  # most of the mass is in the top 8 of 40
    # where both keep every token the top-k KL is the full KL
    monkeypatch.setattr(language, "TOP_K", vocab)
    exact = plugins.metrics.get("token_kl").compute(evaluation(plugins, Table(comp_logits), Table(dense_logits), data))
    assert exact == pytest.approx(full, rel=1e-4)  # up to the fp32 log-probabilities kept


def test_a_classifier_on_token_windows_is_refused_with_the_fix(plugins: Plugins) -> None:
    x, y = windows()
    with pytest.raises(Exception, match="N×T×V"):
        language.run(nn.Sequential(nn.Flatten(), nn.LazyLinear(3)), data_of(x.float(), y), torch.device("cpu"), 4)


SUITE = """
suite: lm-test
seed: 0
device: cpu
models:
  - name: zoo-lm:tiny-llama
    dataset: {{name: python-docs, root: {root}, length: 32, limit: 24, train_limit: 64}}
compressors:
  - {{name: quantize, bits: 4}}
metrics: [perplexity, token_agreement, token_kl, bits]
runtime: {{weight_limits: false}}
"""


def test_a_suite_on_the_zoo_lm_runs_and_resamples_documents(tmp_path: Path) -> None:
    root = fake_pydoc(tmp_path / "_sources")
    suite = tmp_path / "lm.yaml"
    suite.write_text(SUITE.format(root=root))
    assert run_cli("validate", str(suite)) == 0
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--no-progress", "--quiet", "--workers", "1") == 0
    records = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    quantized = next(r for r in records if r["compressor"]["pipeline"] and r["compressor"]["pipeline"][0]["name"] == "quantize")
    metrics = quantized["metrics"]
    dataset = quantized["dataset"]
    assert dataset["task"] == "language-modeling" and dataset["clusters"]["n"] == 24  # a page per window: resampled
    assert quantized["per_example"]["perplexity"]["n"] == 24
    assert metrics["perplexity"]["aggregate"] == "exp_mean" and metrics["perplexity"]["value"] > 1
    assert 0 < metrics["token_agreement"]["value"] <= 100 and metrics["token_kl"]["value"] > 0
    assert "leaderboard.md" in {p.name for p in out.iterdir()}
    text = (out / "leaderboard.md").read_text()
    assert "perplexity" in text and "95% CI" in text
