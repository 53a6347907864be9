"""``b2s-bench compare``: methods matched across two runs, changes with intervals, rules as a gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_records import make_record, outcomes, write_run
from helpers import run_cli

from b2s_bench.errors import UserError
from b2s_bench.reporting.compare import Rule, compare_runs, parse_rule
from b2s_bench.store.records import fingerprint_id

N = 2000


@pytest.fixture(autouse=True)
def _compare_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command as the CLI registers it (a no-op once b2s_bench.cli.main lists it)."""
    from b2s_bench.cli import compare, main

    monkeypatch.setitem(main.COMMANDS, "compare", compare)


def _worse(a: np.ndarray, flips: int) -> np.ndarray:
    """The same examples with ``flips`` right answers made wrong."""
    b = a.copy()
    b[np.flatnonzero(a)[:flips]] = False
    return b


def _runs(
    tmp_path: Path,
    new_q4: np.ndarray,
    *,
    data: str = "data-1",
    new_bits: int = 1_000_000,
    extra_new: list[dict[str, Any]] | None = None,
) -> tuple[Path, Path]:
    """A base run and a new run that differ only in quantize(bits=4)'s outcomes (and ``new_bits``)."""
    dense = outcomes(0.9, N, 0)
    q4, q8 = outcomes(0.85, N, 1), outcomes(0.89, N, 2)
    base = [
        make_record("dense", "dense", bits=8_000_000, values={"top1": dense}),
        make_record("quantize(bits=4)", values={"top1": q4}),
        make_record("quantize(bits=8)", bits=2_000_000, values={"top1": q8}),
    ]
    new = [
        make_record("dense", "dense", bits=8_000_000, values={"top1": dense}, data=data),
        make_record("quantize(bits=4)", bits=new_bits, values={"top1": new_q4}, data=data, suite="n"),
        make_record("quantize(bits=8)", bits=2_000_000, values={"top1": q8}, data=data),
        *(extra_new or []),
    ]
    return write_run(tmp_path / "base", base), write_run(tmp_path / "new", new)


def _base_q4() -> np.ndarray:
    return outcomes(0.85, N, 1)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("top1<-0.5", Rule("top1", "<", -0.5)),
        (" kl > 0.01 ", Rule("kl", ">", 0.01)),
        ("ratio<-1e-1", Rule("ratio", "<", -0.1)),
        ("weight_rel_error>+.05", Rule("weight_rel_error", ">", 0.05)),
    ],
)
def test_rules_parse(text: str, rule: Rule) -> None:
    assert parse_rule(text) == rule


@pytest.mark.parametrize("text", ["top1", "top1<", "top1<=-0.5", "<-0.5", "top1<-0.5%"])
def test_bad_rules_say_how_to_write_one(text: str) -> None:
    with pytest.raises(UserError, match="METRIC<DELTA or METRIC>DELTA"):
        parse_rule(text)


def test_a_significant_drop_fails_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, new = _runs(tmp_path, _worse(_base_q4(), 100))  # 5 points lower, on the same examples
    cmp = compare_runs(base, new, [parse_rule("top1<-0.5")])
    (change,) = [c for c in cmp.changes if c.method == "quantize(bits=4)" and c.metric == "top1"]
    assert change.diff == pytest.approx(-5.0) and change.test == "McNemar exact" and change.p < 1e-20
    assert change.lo < -5.0 < change.hi < -0.5 and change.worse
    assert [c.method for _, c in cmp.failed] == ["quantize(bits=4)"]
    assert run_cli("compare", str(base), str(new), "--fail-on", "top1<-0.5") == 1
    out = capsys.readouterr().out
    assert "FAIL top1<-0.5" in out and "1 FAILED" in out
    assert all(len(line) <= 100 for line in out.splitlines() if not line.startswith("/"))
    # a larger threshold is not crossed significantly: the gate passes
    assert run_cli("compare", str(base), str(new), "--fail-on", "top1<-10") == 0


def test_an_insignificant_drop_passes(tmp_path: Path) -> None:
    base, new = _runs(tmp_path, _worse(_base_q4(), 4))  # 0.2 points: 4 discordant pairs
    cmp = compare_runs(base, new, [parse_rule("top1<-0.1")])
    (change,) = [c for c in cmp.changes if c.method == "quantize(bits=4)" and c.metric == "top1"]
    assert change.diff == pytest.approx(-0.2) and not change.significant and change.hi > -0.1
    assert not cmp.failed
    assert run_cli("compare", str(base), str(new), "--fail-on", "top1<-0.1") == 0


def test_unchanged_methods_are_exactly_equal(tmp_path: Path) -> None:
    base, new = _runs(tmp_path, _base_q4())
    cmp = compare_runs(base, new)
    assert {c.diff for c in cmp.changes} == {0.0} and not any(c.significant for c in cmp.changes)
    top1 = [c for c in cmp.changes if c.metric == "top1"]
    assert {c.p for c in top1} == {1.0} and {(c.lo, c.hi) for c in top1} == {(0.0, 0.0)}


def test_different_examples_use_independent_bootstraps(tmp_path: Path) -> None:
    base, new = _runs(tmp_path, outcomes(0.80, N, 5), data="data-2")
    changes = {(c.method, c.metric): c for c in compare_runs(base, new).changes}
    q4 = changes[("quantize(bits=4)", "top1")]
    assert q4.test == "independent" and q4.diff == pytest.approx(-5.0) and q4.hi < 0
    assert changes[("quantize(bits=8)", "top1")].test == "independent"


def test_size_rules_use_the_exact_change(tmp_path: Path) -> None:
    base, new = _runs(tmp_path, _base_q4(), new_bits=1_600_000)  # ratio 8 -> 5
    cmp = compare_runs(base, new, [parse_rule("ratio<-2"), parse_rule("bits>500000")])
    ratio = next(c for c in cmp.changes if c.method == "quantize(bits=4)" and c.metric == "ratio")
    assert (ratio.test, ratio.lo, ratio.hi) == ("exact", ratio.diff, ratio.diff) and ratio.diff == pytest.approx(-3.0)
    assert sorted(str(rule) for rule, _ in cmp.failed) == ["bits>500000", "ratio<-2"]


def test_outputs_and_unmatched_methods(tmp_path: Path) -> None:
    extra = [make_record("prune(sparsity=0.5)", "pruning", values={"top1": outcomes(0.7, N, 3)})]
    base, new = _runs(tmp_path, _worse(_base_q4(), 100), extra_new=extra)
    assert run_cli("compare", str(base), str(new)) == 0  # no rules: report only
    data = json.loads((new / "comparison.json").read_text())
    assert data["passed"] and data["only_new"] == [["tiny:cnn", "random", "prune(sparsity=0.5)"]]
    assert data["statistics"] == {"resamples": 2000, "seed": 0, "level": 0.95}
    q4 = next(c for c in data["changes"] if c["method"] == "quantize(bits=4)" and c["metric"] == "top1")
    assert q4["significant"] and q4["diff"] == pytest.approx(-5.0)
    md = (new / "comparison.md").read_text()
    assert "| quantize(bits=4) | top1 [%] | 85 | 80 | -5 |" in md and "## Only in the new run" in md
    out = tmp_path / "elsewhere"
    assert run_cli("compare", str(base), str(new), "--out", str(out), "--fail-on", "top1<-1") == 1
    assert json.loads((out / "comparison.json").read_text())["changes"][0]["failed_rules"] is not None


def test_seeds_are_pooled(tmp_path: Path) -> None:
    base_records = [make_record("prune(sparsity=0.5)", "pruning", seed=s, values={"top1": outcomes(0.7, N, s)}) for s in (0, 1)]
    new_records = [
        make_record("prune(sparsity=0.5)", "pruning", seed=s, suite="n", values={"top1": _worse(outcomes(0.7, N, s), 60)})
        for s in (0, 1)
    ]
    base, new = write_run(tmp_path / "base", base_records), write_run(tmp_path / "new", new_records)
    (change,) = [c for c in compare_runs(base, new).changes if c.metric == "top1"]
    assert change.test == "paired" and change.diff == pytest.approx(-3.0) and change.hi < 0


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, new = _runs(tmp_path, _base_q4())
    assert run_cli("compare", str(base), str(new), "--fail-on", "top-1<-0.5") == 2
    assert "no metric 'top-1' in either run" in capsys.readouterr().err
    assert run_cli("compare", str(base), str(tmp_path / "nowhere")) == 2
    assert run_cli("compare", str(base), str(new), "--fail-on", "top1<=1") == 2


@pytest.mark.usefixtures("one_thread")
def test_two_real_runs_that_differ_by_one_setting(tmp_path: Path, write_suite: Any) -> None:
    """The same suite on two checkpoints of one model (the `weights:` setting): the new one has 60 %
    of each layer's weights at zero, so pruning half of them is lossless there. The examples are the
    same (seeded data of the same shape), so changes are paired."""
    import torch

    from b2s_bench import weight_layers
    from b2s_bench.testing import tiny_model

    model = tiny_model(0)
    torch.save(model.state_dict(), tmp_path / "base.pth")
    with torch.no_grad():
        for layer in weight_layers(model).values():
            w = layer.weight.view(-1)
            w[w.abs().argsort()[: int(0.6 * w.numel())]] = 0.0
    torch.save(model.state_dict(), tmp_path / "new.pth")
    suite = """
        suite: {name}
        models:
          - name: tiny:cnn
            label: net
            weights: {weights}
        dataset: {{name: random, n: 96}}
        compressors:
          - name: prune
            grid: {{sparsity: [0.5]}}
        metrics: [agreement, kl, bits, ratio]
        report: {{formats: [json], plots: []}}
    """
    for name in ("base", "new"):
        path = write_suite(suite.format(name=name, weights=tmp_path / f"{name}.pth"), f"{name}.yaml")
        assert run_cli("run", str(path), "--out", str(tmp_path / name), "--quiet", "--no-progress") == 0
    base, new = tmp_path / "base", tmp_path / "new"
    assert run_cli("compare", str(base), str(new), "--fail-on", "agreement<-1") == 0  # agreement did not drop
    changes = {
        c["metric"]: c
        for c in json.loads((new / "comparison.json").read_text())["changes"]
        if c["method"] == "prune(sparsity=0.5)"
    }
    assert changes["agreement"]["test"] == "McNemar exact" and changes["agreement"]["new"] == 100.0
    assert changes["ratio"]["test"] == "exact" and abs(changes["ratio"]["diff"]) < 0.01  # the same settings
    kl = changes["kl"]
    assert kl["test"] == "paired" and kl["new"] == 0.0 and kl["base"] > 0 and kl["hi"] < 0  # lossless now
    # the two checkpoints are a model change: named, and gated only when asked
    assert run_cli("compare", str(base), str(new), "--fail-on", "kl<0") == 0
    assert run_cli("compare", str(base), str(new), "--fail-on", "kl<0", "--gate-model-changes") == 1  # significant, below 0


def _with_weights(rec: dict[str, Any], weights: str) -> dict[str, Any]:
    """A record whose model fingerprint (what cell ids hash) names ``weights``, as the runner writes it."""
    rec["fingerprint"]["model"] = {"name": rec["model"]["name"], "fingerprint": weights}
    rec["cell_id"] = fingerprint_id(rec["fingerprint"])
    return rec


def test_a_model_whose_weights_differ_is_named_and_kept_out_of_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both models drop 5 points at 4 bits; only zoo:fmnist-cnn was trained to other weights in the new run."""
    q4 = _base_q4()
    zoo_base, zoo_new = "recipe:a5a30d08153f2be2:sha256:371c8ddea5c583a4", "recipe:a5a30d08153f2be2:sha256:f3dd10dbeb72fffd"

    def run(folder: str, zoo: str, top1: np.ndarray) -> Path:
        records = [
            _with_weights(make_record(m, model=model, values={"top1": v}, suite=folder), w)
            for model, w in (("zoo:fmnist-cnn", zoo), ("tiny:cnn", "random-init"))
            for m, v in (("dense", outcomes(0.9, N, 0)), ("quantize(bits=4)", top1))
        ]
        return write_run(tmp_path / folder, records)

    base, new = run("base", zoo_base, q4), run("new", zoo_new, _worse(q4, 100))
    cmp = compare_runs(base, new, [parse_rule("top1<-0.5")])
    (changed,) = cmp.model_changes
    assert (changed.model, changed.base, changed.new) == ("zoo:fmnist-cnn", (zoo_base,), (zoo_new,))
    assert changed.rows == sum(c.model == "zoo:fmnist-cnn" for c in cmp.changes) == 6  # 2 methods x 3 metrics
    assert [c.model for _, c in cmp.failed] == ["tiny:cnn"]  # the same drop on the changed model is not gated
    assert run_cli("compare", str(base), str(new), "--fail-on", "top1<-0.5") == 1
    out = capsys.readouterr().out
    assert (
        "zoo:fmnist-cnn: weights differ (sha256 371c8dde… vs sha256 f3dd10db…);\n"
        "  its 6 rows are kept out of the gate; pass --gate-model-changes to include them\n"
    ) in out  # wrapped at 100
    assert "1 FAILED" in out and "would fail top1<-0.5 (weights differ; not gated)" in out
    assert all(len(line) <= 100 for line in out.splitlines() if not line.startswith("/"))
    data = json.loads((new / "comparison.json").read_text())
    assert data["model_changes"] == [{"model": "zoo:fmnist-cnn", "base": [zoo_base], "new": [zoo_new], "rows": 6}]
    assert {c["model"] for c in data["changes"] if not c["gated"]} == {"zoo:fmnist-cnn"}
    assert "## Models whose weights differ" in (new / "comparison.md").read_text()
    # asked to: both drops fail
    cmp = compare_runs(base, new, [parse_rule("top1<-0.5")], gate_model_changes=True)
    assert sorted(c.model for _, c in cmp.failed) == ["tiny:cnn", "zoo:fmnist-cnn"]
    assert run_cli("compare", str(base), str(new), "--fail-on", "top1<-0.5", "--gate-model-changes") == 1
    assert "2 FAILED" in capsys.readouterr().out
    # the same weights on both sides: no model change, every row gated
    same = run("same", zoo_base, _worse(q4, 100))
    cmp = compare_runs(base, same, [parse_rule("top1<-0.5")])
    assert not cmp.model_changes and len(cmp.failed) == 2


def test_a_method_that_fails_in_the_new_run_fails_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A compressor that crashes in the new run has no ok row there: it was listed "only in the base run" and every
    rule passed, so the gate let a broken method through. A method ok in the base run whose cells in the new run all
    ended otherwise (error, not-applicable, short-of-target) is now named with why, and fails a gate that has rules."""
    q4 = outcomes(0.85, N, 1)
    base = write_run(
        tmp_path / "base", [make_record("dense", "dense", bits=8_000_000, values={"top1": q4}), make_record(values={"top1": q4})]
    )
    new = write_run(
        tmp_path / "new",
        [make_record("dense", "dense", bits=8_000_000, values={"top1": q4}), make_record(status="error", suite="n")],
    )
    cmp = compare_runs(base, new, [parse_rule("top1<-0.5")])
    assert cmp.lost == [("tiny:cnn", "random", "quantize(bits=4)", "error: RuntimeError: boom")]
    assert cmp.only_base == [] and not cmp.failed
    assert run_cli("compare", str(base), str(new), "--fail-on", "top1<-0.5") == 1
    out = capsys.readouterr().out
    assert "1 ok in base but not in new" in out and "FAILED" in out
    text = (new / "comparison.md").read_text()
    assert "## Ok in the base run, not in the new run" in text and "quantize(bits=4): error: RuntimeError: boom" in text
    assert json.loads((new / "comparison.json").read_text())["passed"] is False
    assert run_cli("compare", str(base), str(new)) == 0  # no rules: a report, not a gate


def test_runs_of_different_suites_are_said_to_be(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Comparing a run of one suite with a run of another matched what it could and said nothing of it."""
    q4 = outcomes(0.85, N, 1)
    base = write_run(tmp_path / "base", [make_record(values={"top1": q4})], suite="families")
    new = write_run(tmp_path / "new", [make_record(values={"top1": q4}, suite="t")], suite="entropy")
    assert run_cli("compare", str(base), str(new)) == 0
    note = "the runs are of different suites (base families, new entropy)"
    assert note in capsys.readouterr().out and note in (new / "comparison.md").read_text()
    same = write_run(tmp_path / "same", [make_record(values={"top1": q4}, suite="t")], suite="families")
    assert run_cli("compare", str(base), str(same)) == 0
    assert "different suites" not in capsys.readouterr().out
