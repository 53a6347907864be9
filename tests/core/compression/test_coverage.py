"""No silent no-op rows: coverage and target checks in the core (b2s_bench.compression.coverage).

A cell whose result changes none (or almost none) of the weights is ``not-applicable``; one that
misses its config's target is ``short-of-target``; both are done for resume, not failures for the
exit code, and kept out of every ranking, listed in their own table with the reason. A setting that
had no effect is a caveat in the record and the label.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import run_cli

import b2s_bench as b2s
from b2s_bench.compression.coverage import MIN_COVERAGE, coverage, coverage_reason, label_with_caveats
from b2s_bench.plugins import load_plugins
from b2s_bench.reporting.summary import summary_text
from b2s_bench.reporting.tables import caveat_notes, leaderboards, load_frame, methods, not_applicable
from b2s_bench.store.records import DONE_STATUSES
from b2s_bench.testing import tiny_model

COMPRESSORS = load_plugins().compressors.names()

# a tiny timm ViT (no 3×3 conv at all: the patch embedding is a 7×7 stride-7 conv) and a CNN whose
# weights sit mostly in a first layer that structured pruning leaves alone
MODELS = """
import torch
from torch import nn
import b2s_bench as b2s

class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 64, 5, padding=2)
        self.mix = nn.Conv2d(64, 4, 1)
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.mix(self.stem(x)).mean(dim=(2, 3)))

def build(request):
    torch.manual_seed(0)
    if request.arch == "vit":
        from timm.models.vision_transformer import VisionTransformer
        module = VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=16, depth=1,
                                   num_heads=2, mlp_ratio=2.0)
    else:
        module = Stem()
    return b2s.sources.LoadedModel(module, (1, 28, 28), 10, "random-init")

@b2s.hookimpl
def b2s_register_models(register):
    register(b2s.ModelSource("cov", build, lambda pattern: ["vit", "stem"]))
"""


@pytest.fixture
def cov_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cov_models.py"
    path.write_text(MODELS)
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(path))
    return path


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]


def _one(recs: list[dict], label: str) -> dict:
    found = [r for r in recs if r["label"].startswith(label)]
    assert len(found) == 1, [r["label"] for r in recs]
    return found[0]


def test_nern_on_a_vit_is_not_applicable_and_kept_out_of_rankings(
    write_suite: Callable[..., Path], cov_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = write_suite("""
        suite: vit
        models: [cov:vit]
        dataset: {name: random, n: 16}
        compressors:
          - name: nern
            settings: {hidden: 8, steps: 5, levels: 4}
            label: nern
          - name: quantize
            settings: {bits: 8}
            label: q8
        metrics: [agreement, kl, bits]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 0  # not a failure
    recs = _records(out)
    nern = _one(recs, "nern")
    assert nern["status"] == "not-applicable" and nern["error"] is None
    assert nern["details"]["status_reason"] == "NeRN predicts 3×3 kernels of convs with groups = 1; this model has none"
    assert _one(recs, "q8")["status"] == "ok"
    frame, metas, settings = load_frame(out)
    assert sorted(m.split()[0] for m in methods(frame, metas)["method"]) == ["dense", "q8"]
    assert all(not m.startswith("nern") for _, t in leaderboards(frame, metas, settings) for m in t["method"])
    skipped = not_applicable(frame)
    assert [m.split()[0] for m in skipped["method"]] == ["nern"] and list(skipped["status"]) == ["not-applicable"]
    summary = summary_text(out, width=200)
    ranked, _, listed = summary.partition("Not applicable / short of target")
    assert "nern" not in ranked and "q8" in ranked
    assert "nern(hidden=8, steps=5, levels=4): not-applicable: NeRN predicts 3×3 kernels" in listed
    md = (out / "leaderboard.md").read_text()
    assert "## Not applicable / short of target" in md and "this model has none" in md
    assert "Not applicable / short of target" in (out / "leaderboard.html").read_text()
    assert "this model has none" in (out / "not_applicable.csv").read_text()
    assert json.loads((out / "leaderboard.json").read_text())["failed"] == []
    assert run_cli("status", str(out)) == 0  # not-applicable counts as done, not failed
    assert "3 done, 0 running, 0 failed" in capsys.readouterr().out
    # done for resume: a second run computes nothing
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 0
    assert [r["finished_at"] for r in _records(out)] == [r["finished_at"] for r in recs]


def test_structured_pruning_short_of_its_target_is_kept_out(
    write_suite: Callable[..., Path], cov_models: Path, tmp_path: Path
) -> None:
    suite = write_suite("""
        suite: stem
        models: [cov:stem]
        dataset: {name: random, n: 16}
        compressors:
          - name: prune
            settings: {method: channel, sparsity: 0.5, skip_first: true}
            label: channels
          - name: prune
            settings: {sparsity: 0.5}
            label: magnitude
        metrics: [agreement, bits]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 0
    recs = _records(out)
    short, ok = _one(recs, "channels"), _one(recs, "magnitude")
    assert short["status"] == "short-of-target" and ok["status"] == "ok"
    target = short["details"]["target"]
    assert target["asked"] == 0.5 and target["achieved"] < 0.25 and not target["met"]
    assert short["details"]["status_reason"].startswith(
        "prune: short of its target: sparsity (weights removed): asked 50 %, achieved 7.81 % (tolerance 50 %)"
    )
    assert short["metrics"]["agreement"]["value"] is not None  # evaluated: its own table shows what it reached
    assert ok["details"]["target"]["met"] and ok["details"]["coverage"]["share"] == 1.0
    frame, metas, _ = load_frame(out)
    assert sorted(m.split()[0] for m in methods(frame, metas)["method"]) == ["dense", "magnitude"]
    assert list(not_applicable(frame)["status"]) == ["short-of-target"]


def test_bias_correction_without_batchnorm_is_flagged_in_record_and_label(
    write_suite: Callable[..., Path], tmp_path: Path
) -> None:
    suite = write_suite("""
        suite: bc
        models: [tiny:mlp]
        dataset: {name: random, n: 16}
        compressors:
          - name: quantize
            settings: {bits: 4, bias_correction: bn}
        metrics: [agreement, bits]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 0
    rec = _one(_records(out), "quantize")
    assert rec["status"] == "ok" and rec["label"].endswith("[no effect]")
    (caveat,) = rec["details"]["caveats"]
    assert caveat["kind"] == "ineffective-setting"
    assert caveat["message"].startswith("bias_correction: bn corrected none of the 2 quantized layers")
    frame, _, _ = load_frame(out)
    md = (out / "leaderboard.md").read_text()
    assert f"{rec['label']} †" in md and f"- † tiny:mlp · {rec['label']}: bias_correction: bn" in md
    assert caveat_notes(frame) == [f"† tiny:mlp · {rec['label']}: {caveat['message']}"]
    summary = summary_text(out, width=200)
    assert f"{rec['label']} †" in summary and "† caveats (a setting without effect" in summary


@pytest.mark.parametrize("name", COMPRESSORS)
def test_every_compressor_record_has_coverage(name: str, write_suite: Callable[..., Path], tmp_path: Path) -> None:
    """The contract at the record level: every registered compressor's quick settings on the tiny CNN
    give a record with its coverage, an ok one covering at least the minimum, and its target if any."""
    spec = load_plugins().compressors.get(name)
    entry = json.dumps({"name": name, "settings": dict(spec.quick)})  # JSON is YAML
    if spec.recode is not None:  # a recoding stage has nothing to recode on its own: it follows quantize
        entry = json.dumps({"pipeline": [{"name": "quantize", "bits": 4}, {"name": name, **spec.quick}]})
    suite = write_suite(f"""
        suite: contract
        models: [tiny:cnn]
        dataset: {{name: random, n: 16}}
        compressors:
          - {entry}
        metrics: [bits]
        """)
    out = tmp_path / "run"
    run_cli("run", str(suite), "--out", str(out), "--quiet")
    rec = [r for r in _records(out) if r["compressor"]["pipeline"]][0]
    # lowrank's default energy 0.95 keeps every layer of a random-init CNN dense (a flat spectrum):
    # not-applicable, and that is the point; no compressor's quick settings fail
    assert rec["status"] in DONE_STATUSES, rec["error"]
    cov = rec["details"]["coverage"]
    assert cov["weights"] == sum(m.weight.numel() for m in b2s.weight_layers(tiny_model(0)).values())
    assert cov["share"] == cov["covered"] / cov["weights"] and 0 <= cov["share"] <= 1
    if rec["status"] == "ok":
        assert cov["share"] >= MIN_COVERAGE
        if "target" in rec["details"]:
            assert spec.target is not None and rec["details"]["target"]["met"]
    else:
        assert rec["details"]["status_reason"].startswith(f"{name}: ")


def test_coverage_counts_changed_conv_and_linear_weights_only() -> None:
    model = tiny_model(0)
    keys = list(b2s.weight_layers(model))
    state = model.state_dict()
    unchanged = b2s.Compressed.from_codes(tiny_model(0), {})
    cov = coverage(unchanged, model)
    assert cov["covered"] == 0 and cov["layers"] == len(keys) and coverage_reason(cov) is not None
    assert "leaves all 4 conv/linear weights" in (coverage_reason(cov) or "")
    # an fp32 copy of a tensor as a code covers nothing; other values in it do
    from b2s_bench_plugins.compressors.lowrank import DenseCode

    copy = b2s.Compressed.from_codes(tiny_model(0), {keys[0]: DenseCode(state[keys[0]].clone())})
    assert coverage(copy, model)["covered"] == 0
    changed = b2s.Compressed.from_codes(tiny_model(0), {keys[0]: DenseCode(state[keys[0]] * 0.5)})
    assert coverage(changed, model)["covered_layers"] == 1
    # a bias-only change covers nothing (biases do not count)
    bias_key = next(k for k in state if k.endswith(".bias"))
    bias_only = b2s.Compressed.from_codes(tiny_model(0), {bias_key: DenseCode(state[bias_key] + 1)})
    assert coverage(bias_only, model)["covered"] == 0


def test_target_and_caveat_helpers_check_their_input() -> None:
    target = b2s.Target("sparsity", 0.5, 0.4, 0.25, "%")
    assert target.met and not b2s.Target("sparsity", 0.5, 0.3, 0.25, "%").met
    assert target.reason() == "sparsity: asked 50 %, achieved 40 % (tolerance 25 %)"
    with pytest.raises(ValueError, match="tolerance must be in"):
        b2s.Target("ratio", 2.0, 1.0, 1.5)
    with pytest.raises(ValueError, match="asked must be a number"):
        b2s.Target("ratio", float("nan"), 1.0)
    details: dict = {}
    b2s.add_caveat(details, b2s.INEFFECTIVE, "no BatchNorm")
    b2s.add_caveat(details, b2s.INEFFECTIVE, "no BatchNorm")  # kept once
    b2s.add_caveat(details, "unconverged", "loss still falling")
    assert details["caveats"] == [
        {"kind": "ineffective-setting", "message": "no BatchNorm"},
        {"kind": "unconverged", "message": "loss still falling"},
    ]
    assert label_with_caveats("quantize bits=4", details["caveats"]) == "quantize bits=4 [no effect]"
    assert label_with_caveats("x", [{"kind": "unconverged", "message": "m"}]) == "x"
    with pytest.raises(ValueError, match="a kind and a message"):
        b2s.add_caveat(details, "", "m")
