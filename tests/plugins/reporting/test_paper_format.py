"""The ``paper`` report format: published numbers beside the matching cells (plugins/reporting/paper.py).

On synthetic records with known outcomes: the matching rule, the numbers and intervals against a
computation by hand (and the bootstrap functions the leaderboard uses), "not run" rows that say what
is missing, the checkpoint line, and the shipped values file (valid, every entry with its source)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from b2s_bench_plugins.reporting.paper import SHIPPED, Not, load_values, match_problem, paper_rows
from fake_records import make_record, outcomes, write_run

from b2s_bench.calibration import ActivationSettings
from b2s_bench.errors import UserError
from b2s_bench.plugins import load_plugins
from b2s_bench.reporting import ReportContext, write_report
from b2s_bench.reporting.stats import bootstrap_ci, paired_bootstrap, pooled_paired
from b2s_bench.reporting.tables import load_frame

N = 2000  # examples per cell


def _record(
    method: str, stages: list[tuple[str, dict[str, Any]]], rate: float | None, seed: int = 0, **kw: Any
) -> dict[str, Any]:
    family = "dense" if not stages else "quantization"
    values = {"top1": outcomes(rate, N, seed=7 + seed)} if rate is not None else {}
    rec = make_record(method, family, seed=seed, values=values, **kw)
    rec["compressor"]["pipeline"] = [
        {"name": name, "version": "1", "family": family, "track": "data-free", "config": config} for name, config in stages
    ]
    return rec


def _values(folder: Path, entries: list[dict[str, Any]], shipped: bool = False) -> None:
    (folder / "paper_values.yaml").write_text(
        yaml.safe_dump({"version": 1, "shipped": shipped, "values": entries}, sort_keys=False)
    )


def _entry(**kw: Any) -> dict[str, Any]:
    base = {
        "table": "T",
        "model": "tiny:cnn",
        "method": "SQuant W6A6",
        "match": {"compressors": ["squant"], "bits": 6, "activation_bits": 6},
        "reported": {"top1": 69.0},
        "source": "a paper, Table 1",
    }
    return {**base, **kw}


def _context(folder: Path) -> ReportContext:
    frame, metas, settings = load_frame(folder)
    return ReportContext(folder, frame, metas, settings, "s")


def _stage(name: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "config": config}


def _value(**kw: Any) -> Any:
    from b2s_bench_plugins.reporting.paper import PaperValue

    base: dict[str, Any] = {
        "table": "T",
        "model": "m",
        "method": "x",
        "compressors": ("squant",),
        "settings": (("bits", 6),),
        "reported": (("top1", 1.0),),
        "source": "s",
    }
    return PaperValue(**{**base, **kw})


def test_matching_rule() -> None:
    entry = _value(settings=(("bits", 6), ("activation_bits", 6)))
    assert match_problem(entry, [_stage("squant", bits=6, activation_bits=6, granularity="channel")]) is None
    assert match_problem(entry, [_stage("squant", bits=6.0, activation_bits=6)]) is None  # numbers as numbers
    assert match_problem(entry, [_stage("squant", bits=4, activation_bits=6)]) == "bits=4 (wanted 6)"
    assert match_problem(entry, [_stage("squant", bits=6)]) == "no stage has the setting 'activation_bits'"
    # the stage names must be the pipeline's, in order; [] is the dense model
    assert (
        match_problem(entry, [_stage("squant", bits=6, activation_bits=6), _stage("entropy")])
        == "its stages are [squant, entropy]"
    )
    assert match_problem(entry, []) == "it is the dense model"
    assert match_problem(_value(compressors=(), settings=()), []) is None
    # an unqualified key binds every stage that has it; STAGE.KEY only the stages of that name
    pipe = [_stage("big2small", inr_bits=32, bits=8), _stage("quantize", bits=6)]
    assert match_problem(_value(compressors=("big2small", "quantize"), settings=(("bits", 6),)), pipe) == "bits=8 (wanted 6)"
    assert match_problem(_value(compressors=("big2small", "quantize"), settings=(("quantize.bits", 6),)), pipe) is None
    assert match_problem(_value(compressors=("big2small", "quantize"), settings=(("inr_bits", 32),)), pipe) is None
    # {not: v}, booleans that are not numbers, lists item by item
    assert match_problem(_value(settings=(("outliers", Not("none")),)), [_stage("squant", outliers="sigma")]) is None
    assert (
        match_problem(_value(settings=(("outliers", Not("none")),)), [_stage("squant", outliers="none")])
        == "outliers=none (wanted ≠none)"
    )
    assert match_problem(_value(settings=(("skip", 1),)), [_stage("squant", skip=True)]) == "skip=true (wanted 1)"
    assert match_problem(_value(settings=(("ks", (3, 5)),)), [_stage("squant", ks=[3, 5])]) is None
    assert match_problem(_value(settings=(("ks", (3, 5)),)), [_stage("squant", ks=[3])]) is not None
    # the suite's activations stage (the record's compressor.activations): activations.KEY, or null for none
    w6a6 = _value(settings=(("bits", 6), ("activations.bits", 6)))
    assert match_problem(w6a6, [_stage("squant", bits=6)], {"bits": 6, "ranges": "bn"}) is None
    assert match_problem(w6a6, [_stage("squant", bits=6)], {"bits": 8}) == "activations.bits=8 (wanted 6)"
    assert match_problem(w6a6, [_stage("squant", bits=6)], None) == "it has no activations stage (weights only)"
    weights_only = _value(settings=(("activations", None),))
    assert match_problem(weights_only, [_stage("squant")], None) is None
    assert (
        match_problem(weights_only, [_stage("squant")], {"bits": 6})
        == "it quantizes activations (activations.bits=6; wanted none)"
    )


def test_the_activations_stage_is_read_from_the_records(tmp_path: Path) -> None:
    a6 = _record("squant(bits=6) W6A6", [("squant", {"bits": 6})], 0.68)
    a6["compressor"]["activations"] = {"bits": 6, "ranges": "bn"}
    folder = write_run(
        tmp_path / "run", [_record("dense", [], 0.70), a6, _record("squant(bits=6)", [("squant", {"bits": 6})], 0.69)]
    )
    w6a6 = {"compressors": ["squant"], "bits": 6, "activations.bits": 6}
    _values(folder, [_entry(match=w6a6), _entry(method="W6A8", match={**w6a6, "activations.bits": 8})])
    table, not_run, _ = paper_rows(_context(folder), load_values(folder / "paper_values.yaml")[0])
    assert list(table["ours"]) == ["squant(bits=6) W6A6"]
    assert list(not_run["missing"]) == [
        "no cell of tiny:cnn with [squant] bits=6, activations.bits=8: its [squant] cells have activations.bits=6 "
        "(wanted 8); it has no activations stage (weights only)"
    ]


def _run(tmp_path: Path, extra: list[dict[str, Any]] | None = None) -> Path:
    records = [
        _record("dense", [], 0.70),
        _record("squant(bits=6)", [("squant", {"bits": 6, "activation_bits": 6})], 0.68, bits=1_500_000),
        _record("squant(bits=4)", [("squant", {"bits": 4, "activation_bits": 4})], 0.50),
        *(extra or []),
    ]
    return write_run(tmp_path / "run", records)


def test_numbers_and_intervals_match_a_hand_computation(tmp_path: Path) -> None:
    folder = _run(tmp_path)
    _values(
        folder,
        [_entry(reported={"top1": 69.0, "size_mib": 0.18, "ratio": 5.2}, fp32={"top1": 72.5}, checkpoint="pytorchcv")],
    )
    table, not_run, notes = paper_rows(_context(folder), load_values(folder / "paper_values.yaml")[0])
    assert not_run.empty and len(table) == 3
    top1, size, ratio = (table[table["metric"] == m].iloc[0] for m in ("top1", "size_mib", "ratio"))
    assert top1["ours"] == "squant(bits=6)" and top1["cells"] and top1["seeds"] == 1
    dense, ours = outcomes(0.70, N, seed=7), outcomes(0.68, N, seed=7)
    # by hand: 68 % measured, 70 % dense; the paper 69.0 from its 72.5
    assert top1["measured"] == pytest.approx(68.0) and top1["measured − paper"] == pytest.approx(-1.0)
    assert top1["paper drop"] == pytest.approx(69.0 - 72.5) and top1["measured fp32"] == pytest.approx(70.0)
    assert top1["measured drop"] == pytest.approx(-2.0)
    assert top1["drop difference"] == pytest.approx(-2.0 - (69.0 - 72.5))
    # the intervals: the leaderboard's bootstrap of the cell, the paired bootstrap against the dense cell
    ci = bootstrap_ci(ours, 100.0)
    assert top1["measured 95% CI"] == pytest.approx((ci.lo, ci.hi))
    paired = paired_bootstrap(dense, ours, 100.0)
    assert top1["measured drop 95% CI"] == pytest.approx((paired.lo, paired.hi))
    # a binomial's standard error, sqrt(p(1-p)/n) = 1.04 points: the interval is about ±2 points wide
    assert ci.hi - ci.lo == pytest.approx(2 * 1.96 * math.sqrt(0.68 * 0.32 / N) * 100, rel=0.15)
    assert ci.lo < 69.0 < ci.hi and top1["verdict"] == "the paper's value lies within our 95 % interval"
    # the drop difference's interval lies above 0 (ours loses 2.0, the paper 3.5): "above", and in words
    lo, hi = paired.lo - (69.0 - 72.5), paired.hi - (69.0 - 72.5)
    assert (
        top1["drop verdict"] == f"above the paper's drop by {top1['drop difference']:.2f} [{lo:.2f}, {hi:.2f}]: ours loses less"
    )
    # sizes are counts: 1.5 Mbit = 0.1788 MiB (equal at 2 decimals to 0.18); ratio 8/1.5 = 5.33 against 5.2
    assert size["measured"] == pytest.approx(1_500_000 / 8 / 2**20)
    assert size["verdict"] == "equal to the paper's value at its printed precision"
    assert ratio["measured"] == pytest.approx(8 / 1.5)
    assert ratio["verdict"] == f"above the paper's value by {8 / 1.5 - 5.2:.2f} (exact counts)"
    assert math.isnan(size["paper drop"]) and size["drop verdict"] == "no drop: the source gives no fp32 baseline"
    # the source's 72.5 lies outside our dense cell's interval (70 ± 2): the checkpoints differ
    assert len(notes) == 1 and "checkpoints differ on tiny:cnn" in notes[0] and "72.50 (pytorchcv)" in notes[0]


def test_verdict_below_the_paper_and_seeds_pooled(tmp_path: Path) -> None:
    seeds = [
        _record("squant(bits=6)", [("squant", {"bits": 6, "activation_bits": 6})], r, seed=s)
        for s, r in enumerate((0.6, 0.61, 0.59))
    ]
    folder = write_run(tmp_path / "run", [_record("dense", [], 0.70), *seeds])
    _values(folder, [_entry(reported={"top1": 70.0}, fp32={"top1": 70.0})])
    table, _, notes = paper_rows(_context(folder), load_values(folder / "paper_values.yaml")[0])
    row = table.iloc[0]
    assert row["seeds"] == 3 and row["measured"] == pytest.approx(60.0)
    lo, hi = row["measured 95% CI"]
    assert hi < 70.0 and row["verdict"] == f"below the paper's value by 10.00 [{70 - hi:.2f}, {70 - lo:.2f}]"
    # three seeds against the dense cell: the two-level paired bootstrap, as the leaderboard pools seeds
    runs = np.stack([outcomes(r, N, seed=7 + s) for s, r in enumerate((0.6, 0.61, 0.59))])
    paired = pooled_paired(outcomes(0.70, N, seed=7), runs, None, scale=100.0)
    assert row["measured drop"] == pytest.approx(-10.0) and row["measured drop 95% CI"] == pytest.approx((paired.lo, paired.hi))
    assert row["drop verdict"].startswith("below the paper's drop by 10.00") and row["drop verdict"].endswith("ours loses more")
    assert notes == []  # the source's fp32 (70.0) lies within our dense cell's interval


def test_not_run_rows_say_what_is_missing(tmp_path: Path) -> None:
    failed = _record("udfc(bits=6)", [("udfc", {"bits": 6})], None, status="error")
    folder = _run(tmp_path, [failed])
    _values(
        folder,
        [
            _entry(method="on another model", model="resnet18"),
            _entry(method="no such stages", match={"compressors": ["dsg"], "bits": 6}),
            _entry(method="other settings", match={"compressors": ["squant"], "bits": 8}),
            _entry(method="failed", match={"compressors": ["udfc"], "bits": 6}),
            _entry(method="other dataset", dataset="imagenet"),
            _entry(method="found"),
        ],
    )
    table, not_run, _ = paper_rows(_context(folder), load_values(folder / "paper_values.yaml")[0])
    assert list(table["method"].unique()) == ["found"]
    missing = dict(zip(not_run["method"], not_run["missing"], strict=True))
    assert missing["on another model"] == "no model labelled 'resnet18' in the run (models: tiny:cnn)"
    assert missing["no such stages"] == "no cell of tiny:cnn runs [dsg] bits=6"
    assert missing["other settings"] == (
        "no cell of tiny:cnn with [squant] bits=8: its [squant] cells have bits=4 (wanted 8); bits=6 (wanted 8)"
    )
    assert missing["failed"] == "the matching cells did not succeed: udfc(bits=6) (error: RuntimeError: boom)"
    assert missing["other dataset"] == "no cell of tiny:cnn on the dataset 'imagenet'"
    assert set(not_run["source"]) == {"a paper, Table 1"}


def test_format_is_registered_and_writes_markdown_and_json(tmp_path: Path) -> None:
    folder = _run(tmp_path)
    _values(folder, [_entry(fp32={"top1": 70.0}), _entry(method="absent", model="resnet18")], shipped=True)
    plugins = load_plugins()
    assert "paper" in {spec.name for spec in plugins.reporters}
    files = write_report(folder, plugins, ["paper"])
    assert sorted(p.name for p in files) == ["paper.json", "paper.md"]
    text = (folder / "paper.md").read_text()
    assert "## T" in text and "| tiny:cnn | SQuant W6A6 | squant(bits=6) | top1 | 69.00 | 68.00 |" in text
    assert "## Not run" in text and "| T | resnet18 | absent |" in text
    assert "paper_values.yaml (shipped)" in text and "Big2Small paper, Table V (second-hand summary)" in text
    data = json.loads((folder / "paper.json").read_text())
    row = next(r for r in data["rows"] if r["method"] == "SQuant W6A6")
    assert row["measured"] == pytest.approx(68.0) and len(row["measured 95% CI"]) == 2
    assert row["paper drop"] == pytest.approx(-1.0) and "_places" not in row
    assert any(r["method"] == "Big2Small-6bit" for r in data["not_run"])  # the shipped values, not run here


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reported": {"top1": "71%"}}, "values[0].reported.top1: '71%' is not a finite number"),
        ({"source": ""}, "values[0].source: '' is not a non-empty text"),
        ({"match": {"bits": 6}}, "values[0].match: {'bits': 6} has no compressors"),
        ({"match": {"compressors": ["squant"], "quantize.bits": 6}}, "values[0].match.quantize.bits: no stage 'quantize'"),
        ({"match": {"compressors": ["squant"], "bits": {"gt": 4}}}, "values[0].match.bits: a mapping {'gt': 4} is no setting"),
        ({"fp32": {"top5": 90.0}}, "fp32: ['top5'] are not among the reported metrics ['top1']"),
        ({"colour": "red"}, "values[0].colour: unknown key"),
        ({"match": {"compressors": ["squant"], "activations": 6}}, "values[0].match.activations: 6 is not null"),
    ],
)
def test_bad_entries_name_the_key_and_the_fix(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    entry = _entry(**change)
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump({"values": [entry]}))
    with pytest.raises(UserError, match="; ") as err:
        load_values(path)
    assert str(path) in str(err.value) and message in str(err.value)
    path.write_text(yaml.safe_dump({"values": [_entry(), _entry()]}))
    with pytest.raises(UserError, match=r"values\[1\]: repeats values\[0\]"):
        load_values(path)
    path.write_text("values: {}")
    with pytest.raises(UserError, match="values: missing or not a list"):
        load_values(path)


def test_shipped_values_validate_and_every_entry_names_its_source() -> None:
    entries, shipped = load_values(SHIPPED)
    assert shipped and len(entries) >= 30
    for e in entries:
        assert e.source.strip() and e.table.strip()
        if e.source.startswith("Big2Small paper"):
            assert e.source.endswith("(second-hand summary)") or "(second-hand summary;" in e.source
    found = {(e.table, e.model, e.method, metric): v for e in entries for metric, v in e.reported}
    # every number of the shared docs' tables, a few checked here
    assert found[("Big2Small main comparison, ResNet-18", "resnet18", "UDFC W6A6", "top1")] == 72.76
    assert found[("Big2Small main comparison, ResNet-50", "resnet50", "RieM W4A4", "size_mib")] == 12.3
    assert found[("Big2Small main comparison, Swin-T", "swin-t", "Big2Small-6bit", "ratio")] == 7.9
    assert found[("Big2Small composition, ResNet-18", "resnet18", "+ SVD", "ratio")] == 2.9
    assert found[("SQuant's results", "resnet50", "SQuant W8A8", "top1")] == 77.71
    assert found[("DSG's results", "resnet18", "DSG W4A4 (conference)", "top1")] == 34.53
    assert found[("Big2Small reconstruction ablation, ResNet-50 conv layers", "resnet50", "MSE only", "weight_psnr")] == 34.29
    drops = {(e.model, e.method): dict(e.fp32).get("top1") for e in entries if e.table.startswith("Big2Small main")}
    assert drops[("resnet18", "Big2Small-6bit")] == 71.47 and drops[("resnet50", "Big2Small-8bit")] == 77.72
    # the paper's "MB" is MiB: ResNet-18's 11,689,512 fp32 weights are 44.6 of them
    assert found[("Big2Small main comparison, ResNet-18", "resnet18", "fp32 (original)", "size_mib")] == round(
        11_689_512 * 4 / 2**20, 1
    )
    # a setting a registered compressor is matched on is one of its config's fields
    compressors = {spec.name: spec for spec in load_plugins().compressors}
    activations = {f.name for f in dataclasses.fields(ActivationSettings)}
    for e in entries:
        for key, _ in e.settings:
            stage, _, name = key.rpartition(".")
            if stage == "activations":  # the suite's activations stage
                assert name in activations, (e.method, key)
                continue
            known = [compressors[s] for s in e.compressors if s in compressors and (not stage or s == stage)]
            fields = {f.name for spec in known for f in dataclasses.fields(spec.config)}
            assert not known or name in fields, (e.method, key)


def test_the_html_page_shows_the_section_when_the_suite_selects_the_format(tmp_path: Path) -> None:
    records = [_record("dense", [], 0.70), _record("squant(bits=6)", [("squant", {"bits": 6, "activation_bits": 6})], 0.68)]
    plugins = load_plugins()
    for formats, shown in ((["html", "paper"], True), (["html"], False)):
        folder = write_run(tmp_path / "-".join(formats), records, report={"formats": formats})
        _values(folder, [_entry(fp32={"top1": 70.0}), _entry(method="absent", model="resnet18")])
        write_report(folder, plugins, ["html"])
        page = (folder / "leaderboard.html").read_text()
        assert ("<h2>Published numbers beside ours</h2>" in page) is shown
        assert ("<td class='t' data-v='SQuant W6A6'>SQuant W6A6</td>" in page) is shown
        assert ("no model labelled &#x27;resnet18&#x27; in the run" in page) is shown


def test_printed_precision_decides_equal_sizes(tmp_path: Path) -> None:
    """A size is a count: equal when within half a unit of the paper's last printed digit. A value
    written as text keeps the zeros YAML drops from a number ("5.30" is printed to 2 decimals)."""
    folder = _run(tmp_path)
    _values(folder, [_entry(reported={"ratio": 5.3}), _entry(method="zeros kept", reported={"ratio": "5.30"})])
    entries = load_values(folder / "paper_values.yaml")[0]
    assert [e.decimals("ratio") for e in entries] == [1, 2]
    table, _, _ = paper_rows(_context(folder), entries)
    verdicts = dict(zip(table["method"], table["verdict"], strict=True))  # measured 8 / 1.5 = 5.333
    assert verdicts["SQuant W6A6"] == "equal to the paper's value at its printed precision"
    assert verdicts["zeros kept"] == "above the paper's value by 0.03 (exact counts)"


def test_each_matching_method_is_a_row_and_an_identity_cell_stands_in_for_the_dense_one(tmp_path: Path) -> None:
    identity = _record("quantize(bits=32)", [("quantize", {"bits": 32})], 0.70, identity=True)
    grid = [
        _record(f"squant(bits=6, group={g})", [("squant", {"bits": 6, "activation_bits": 6, "group": g})], r)
        for g, r in ((64, 0.69), (128, 0.66))
    ]
    folder = write_run(tmp_path / "run", [identity, *grid])
    _values(folder, [_entry(fp32={"top1": 70.0})])
    table, not_run, _ = paper_rows(_context(folder), load_values(folder / "paper_values.yaml")[0])
    assert not_run.empty
    assert list(table["ours"]) == ["squant(bits=6, group=128)", "squant(bits=6, group=64)"]
    assert list(table["measured fp32"]) == pytest.approx([70.0, 70.0])  # no dense cell: the identity cell's
    assert list(table["measured drop"]) == pytest.approx([-4.0, -1.0])
