"""Deep Compression's trained quantization inside the pipeline: ``prune`` → ``share`` with
``finetune_epochs > 0`` (the shared values fine-tuned on the whole pruned model through the spec's
``refine``), then ``entropy`` on top."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from b2s_bench_plugins.compressors import entropy, prune
from b2s_bench_plugins.compressors.share import SPEC, ShareCode
from helpers import run_cli
from torch import nn

from b2s_bench import Compressed, Context
from b2s_bench.config import build_config
from b2s_bench.execution.cell import apply_stage
from b2s_bench.testing import check_compressor, tiny_context, tiny_model

RELATIVE = {"positions": "relative", "layer_index_bits": {"features.*": 8, "classifier.*": 5}}


def _share(**settings: Any) -> Any:
    return build_config(SPEC.config, settings, owner="share")


def _pruned(model: nn.Module, ctx: Context, sparsity: float, **settings: Any) -> Compressed:
    return prune.SPEC.compress(copy.deepcopy(model), build_config(prune.SPEC.config, {"sparsity": sparsity, **settings}), ctx)


def _shared_codes(compressed: Compressed) -> dict[str, ShareCode]:
    """The share stage's codes of the kept values, by "key/payload name"."""
    found = {}
    for key, code in compressed.codes.items():
        for name, inner in getattr(code, "inner", {}).items():
            if isinstance(inner, ShareCode):
                found[f"{key}/{name}"] = inner
    return found


@torch.no_grad()
def _loss(compressed: Compressed, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model = compressed.module()
    return sum(float(nn.functional.cross_entropy(model(x), y)) for x, y in batches) / len(batches)


def _clusters(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ten Gaussian clusters in 32 dimensions (fixed centres, unit noise): a task a small MLP learns."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(10, 32, generator=torch.Generator().manual_seed(123))
    y = torch.randint(0, 10, (n,), generator=gen)
    return centres[y] + torch.randn(n, 32, generator=gen), y


@dataclasses.dataclass
class Trained:
    model: nn.Module
    batches: list[tuple[torch.Tensor, torch.Tensor]]  # the training split, as ctx.training gives it
    held_out: tuple[torch.Tensor, torch.Tensor]

    def context(self) -> Context:
        return Context(input_shape=(32,), num_classes=10, training=lambda: self.batches)

    @torch.no_grad()
    def accuracy(self, compressed: Compressed) -> float:
        x, y = self.held_out
        return float((compressed.module()(x).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def trained() -> Trained:
    """An MLP trained on 1,024 examples of the clusters (99.7 % on 1,024 held-out ones)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = _clusters(1, 1024)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(30):
        for i in range(0, 1024, 64):
            loss = nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return Trained(model.eval(), [(x[i : i + 128], y[i : i + 128]) for i in range(0, 1024, 128)], _clusters(2, 1024))


def test_finetuning_after_prune_keeps_positions_and_indices_moves_the_codebook_and_lowers_the_loss(trained: Trained) -> None:
    ctx = trained.context()
    # 2-bit relative indices: gaps over 3 need filler zeros, which share a centroid pinned at 0
    pruned = _pruned(trained.model, ctx, 0.85, positions="relative", index_bits=2)
    plain = apply_stage(pruned, SPEC, _share(bits=2), ctx, trained.model)
    tuned = apply_stage(pruned, SPEC, _share(bits=2, finetune_epochs=2, finetune_lr=0.1), ctx, trained.model)
    assert SPEC.track_for(_share(finetune_epochs=1)) == "training"
    before, after = pruned.state_dict(), tuned.state_dict()
    for key in pruned.codes:  # the mask is respected: every pruned weight is still exactly 0
        assert bool((after[key][before[key] == 0] == 0).all()), key
        assert tuned.codes[key].outer is pruned.codes[key]  # type: ignore[attr-defined]  # prune's code as it was
    plain_codes, tuned_codes = _shared_codes(plain), _shared_codes(tuned)
    assert plain_codes.keys() == tuned_codes.keys() and len(tuned_codes) == 2
    moved = 0
    for name, code in tuned_codes.items():
        assert torch.equal(code.indices, plain_codes[name].indices), name  # the indices are k-means'
        moved += int((code.codebook != plain_codes[name].codebook).sum())
        assert code.fit is not None and code.fit["zero_pinned"], name  # fillers are there, and their zero stays 0
        assert 0.0 in code.codebook.tolist()
    assert moved > 0
    stage = tuned.info["stages"][-1]
    assert stage["compressor"] == "share" and stage["refine"]["data_track"] == "training"
    facts = stage["refine"]["finetune"]
    assert facts["steps"] == 16 and facts["tensors"] == 2 and facts["first_loss"] > facts["epoch_loss"][-1]
    assert "refine" not in plain.info["stages"][-1]  # finetune_epochs: 0 asks for nothing
    assert tuned.size().total_bits == plain.size().total_bits  # the same storage, other values
    assert _loss(tuned, trained.batches) < 0.9 * _loss(plain, trained.batches)


def test_finetuning_recovers_held_out_accuracy_on_a_seeded_case(trained: Trained) -> None:
    """85 % pruned, then 2-bit shared: fine-tuning the shared values on the training split gains
    held-out accuracy (measured: 86.9 % without, 88.4 % with fine-tuning, on 1,024 held-out
    examples; the dense model 99.7 %, pruned alone 88.3 %; training loss 0.78 to 0.29)."""
    ctx = trained.context()
    pruned = _pruned(trained.model, ctx, 0.85)
    plain = apply_stage(pruned, SPEC, _share(bits=2), ctx, trained.model)
    tuned = apply_stage(pruned, SPEC, _share(bits=2, finetune_epochs=5, finetune_lr=0.1), ctx, trained.model)
    assert _loss(tuned, trained.batches) < _loss(plain, trained.batches)
    assert trained.accuracy(tuned) >= trained.accuracy(plain) + 0.01, (trained.accuracy(plain), trained.accuracy(tuned))


def test_refused_without_training_data() -> None:
    pruned = _pruned(tiny_model(0), tiny_context(0), 0.8)
    with pytest.raises(ValueError, match="training split.*finetune_epochs: 0"):
        apply_stage(pruned, SPEC, _share(bits=3, finetune_epochs=1), tiny_context(0, with_data=False), tiny_model(0))


def test_entropy_on_top_codes_the_trained_model_unchanged() -> None:
    ctx = tiny_context(0)
    pruned = _pruned(tiny_model(0), ctx, 0.8, **RELATIVE)
    tuned = apply_stage(pruned, SPEC, _share(bits=4, finetune_epochs=1, finetune_lr=0.05), ctx, tiny_model(0))
    coded = apply_stage(tuned, entropy.SPEC, build_config(entropy.EntropyConfig, {"coder": "huffman"}), ctx)
    decoded, before = coded.state_dict(), tuned.state_dict()
    assert all(torch.equal(decoded[k], before[k]) for k in before)
    assert coded.size().total_bits < tuned.size().total_bits
    assert [s.get("compressor") for s in coded.info["stages"][1:]] == ["share", "entropy"]


def test_contract_as_a_refining_later_stage() -> None:
    # check_compressor runs share after HalfCodes through the pipeline, refine included
    assert check_compressor(SPEC, {"bits": 3, "finetune_epochs": 1, "finetune_batches": 2}).bits > 0


def test_a_suite_pipeline_is_on_the_training_track_and_its_record_says_so(
    write_suite: Callable[..., Path], tmp_path: Path
) -> None:
    suite = write_suite("""
        suite: trained
        models: [tiny:cnn]
        dataset: {name: random, n: 32}
        baseline: false
        compressors:
          - pipeline:
              - {name: prune, sparsity: 0.8, positions: relative}
              - {name: share, bits: 3, finetune_epochs: 1, finetune_lr: 0.05}
              - {name: entropy, coder: huffman}
            label: trained
          - pipeline:
              - {name: prune, sparsity: 0.8, positions: relative}
              - {name: share, bits: 3}
            label: data-free
        metrics: [bits, agreement]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet", "--executor", "inline") == 0
    records = {r["label"].split()[0]: r for r in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))}
    trained, free = records["trained"], records["data-free"]
    assert trained["status"] == "ok" and free["status"] == "ok"
    assert trained["track"] == "training" and free["track"] == "data-free"
    assert [s["track"] for s in trained["compressor"]["pipeline"]] == ["data-free", "training", "data-free"]
    stage = trained["details"]["stages"][1]
    assert stage["compressor"] == "share" and stage["refine"]["finetune"]["steps"] >= 1


def test_the_deep_compression_suite_has_the_trained_pipeline() -> None:
    import yaml

    suite = yaml.safe_load((Path(__file__).resolve().parents[3] / "suites" / "deep-compression.yaml").read_text())
    rows = {entry.get("label"): entry for entry in suite["compressors"]}
    trained = rows["deep compression, trained"]["pipeline"]
    assert [s["name"] for s in trained] == ["prune", "share", "entropy"]
    assert 1 <= trained[1]["finetune_epochs"] <= 2
    assert SPEC.track_for(_share(**{k: v for k, v in trained[1].items() if k != "name"})) == "training"
    assert {k: v for k, v in trained[1].items() if not k.startswith("finetune")} == rows["deep compression"]["pipeline"][1]
