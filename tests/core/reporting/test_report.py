"""Reports are rebuilt from stored records alone, in every format, deterministically; with
intervals, seeds pooled, units by kind, validated settings, flags against the Gaussian limit and a
terminal summary. ``make_record``/``write_run`` build synthetic run folders (also for
tests/core/reporting/test_compare.py and tests/plugins/reporting/test_html.py)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fake_records import SPECS, make_record, outcomes, rd_details, write_run  # noqa: F401
from helpers import run_cli

from b2s_bench.errors import UserError
from b2s_bench.reporting.summary import summary_text
from b2s_bench.reporting.tables import BELOW_LIMIT, MetricMeta, header, leaderboards, load_frame, primary_metric


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import TINY_SUITE

    folder = tmp_path_factory.mktemp("report")
    suite = folder / "suite.yaml"
    suite.write_text(TINY_SUITE.replace("metrics: [", "metrics: [latency_ms, compress_seconds, "))
    assert run_cli("run", str(suite), "--out", str(folder / "run"), "--quiet") == 0
    return folder / "run"


def test_report_rebuilds_everything_from_records(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run_dir / "cells", copy / "cells")
    shutil.copy(run_dir / "run.json", copy / "run.json")
    assert run_cli("report", str(copy)) == 0
    for name in (
        "leaderboard.md",
        "leaderboard.csv",
        "leaderboard.html",
        "leaderboard.json",
        "pareto.png",
        "failed.csv",
        "records.csv",
    ):
        assert (copy / name).is_file()
    assert (copy / "leaderboard.md").read_text() == (run_dir / "leaderboard.md").read_text()


def test_markdown_has_units_arrows_deltas_and_sorted_rows(run_dir: Path) -> None:
    text = (run_dir / "leaderboard.md").read_text()
    assert "top1 [%] ↑" in text and "size [MB] ↓" in text and "ratio [x] ↑" in text and "kl [nats] ↓" in text
    assert "Δ top1" in text and "latency_ms [ms] ↓" in text
    rows = [ln for ln in text.split("## tiny:cnn on random")[1].split("##")[0].splitlines() if ln.startswith("| ")][1:]
    methods = [r.split("|")[1].strip() for r in rows]
    assert methods[0] == "dense"
    frame, metas, settings = load_frame(run_dir)
    ((_, table),) = leaderboards(frame, metas, settings)
    ratio = table["ratio [x] ↑"].tolist()
    assert table["method"].iloc[0] == "dense" and ratio[1:] == sorted(ratio[1:], reverse=True)
    assert "## Theory checks" in text


def test_csv_json_html_agree(run_dir: Path) -> None:
    csv = pd.read_csv(run_dir / "leaderboard.csv")
    data = json.loads((run_dir / "leaderboard.json").read_text())
    assert len(csv) == len(data["leaderboards"][0]["rows"]) == 4
    assert list(csv["method"]) == [r["method"] for r in data["leaderboards"][0]["rows"]]
    html = (run_dir / "leaderboard.html").read_text()
    assert html.startswith("<!doctype html>") and "sortable" in html and "<script>" in html
    body = html.split("<body>")[1]
    for attr in ("src=", "href="):  # self-contained: no external resources (plots are data: URIs)
        assert all(part.startswith(("'data:", '"data:')) for part in body.split(attr)[1:])
    raw = pd.read_csv(run_dir / "records.csv")
    assert raw["total_bits"].dtype.kind == "i"  # exact bits survive


@pytest.mark.parametrize("fmt", ["md", "csv", "json", "html"])
def test_report_format_flag(run_dir: Path, tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run_dir / "cells", copy / "cells")
    assert run_cli("report", str(copy), "--format", fmt) == 0
    written = capsys.readouterr().out.split()
    assert written and all(Path(w).exists() for w in written)


def test_unknown_format_suggests(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("report", str(run_dir), "--format", "htm") == 2
    assert "did you mean 'html'" in capsys.readouterr().err


# --- synthetic run folders: intervals, seeds, units, settings, flags, summary ---------------------------------


def _run(tmp_path: Path, records: Sequence[dict[str, Any]], **kw: Any) -> Path:
    return write_run(tmp_path / "run", records, **kw)


def _table(folder: Path) -> pd.DataFrame:
    frame, metas, settings = load_frame(folder)
    ((_, table),) = leaderboards(frame, metas, settings)
    return table


def test_intervals_come_from_per_example_outcomes_and_old_records_show_none(tmp_path: Path) -> None:
    folder = _run(
        tmp_path,
        [
            make_record("dense", "dense", bits=8_000_000, values={"top1": outcomes(0.9, 1000, 1)}),
            make_record("quantize(bits=4)", values={"top1": outcomes(0.85, 1000, 2)}),
            make_record("old(bits=4)", values={"top1": 80.0}),  # a record from before per-example outcomes
        ],
    )
    table = _table(folder).set_index("method")
    lo, hi = table.loc["quantize(bits=4)", "top1 95% CI"]
    half = 1.96 * math.sqrt(0.85 * 0.15 / 1000) * 100  # the normal approximation, for scale
    assert lo < 85.0 < hi and abs((hi - lo) / 2 - half) < 0.4
    assert table.loc["old(bits=4)", "top1 95% CI"] is None
    assert _table(folder)["top1 95% CI"].tolist() == table["top1 95% CI"].tolist()  # seeded: the same on every rebuild
    assert run_cli("report", str(folder), "--format", "md") == 0
    text = (folder / "leaderboard.md").read_text()
    assert "top1 95% CI" in text and "| old(bits=4) " in text and "2000 resamples" in text and "seed 0" in text
    old_row = next(ln for ln in text.splitlines() if ln.startswith("| old(bits=4)"))
    assert "–" in old_row


def test_a_value_that_is_not_the_mean_of_its_outcomes_gets_no_interval(tmp_path: Path) -> None:
    rec = make_record(values={"top1": outcomes(0.5, 200)})
    rec["metrics"]["top1"]["value"] = 70.0  # e.g. a median, or outcomes of something else
    frame, _, _ = load_frame(_run(tmp_path, [rec]))
    assert "ci_lo:top1" not in frame


def test_seeds_are_pooled_into_one_row_with_mean_std_and_a_pooled_interval(tmp_path: Path) -> None:
    seeds = [
        make_record("prune(sparsity=0.5)", "pruning", seed=s, values={"top1": outcomes(r, 500, s)})
        for s, r in ((0, 0.80), (1, 0.84), (2, 0.82))
    ]
    table = _table(_run(tmp_path, seeds))
    assert len(table) == 1 and table["seeds"].iloc[0] == 3
    assert table["top1 [%] ↑"].iloc[0] == pytest.approx(82.0)
    assert table["± top1"].iloc[0] == pytest.approx(2.0)  # sample std of 80, 84, 82
    lo, hi = table["top1 95% CI"].iloc[0]
    assert lo < 82.0 < hi and hi - lo < 2 * 1.96 * math.sqrt(0.82 * 0.18 / 500) * 100  # pooled: narrower than one seed
    assert len(table["cell"].iloc[0].split(", ")) == 3


def test_only_a_size_metric_in_bits_is_shown_in_megabytes() -> None:
    size = MetricMeta("bits", "bits", False, "size")
    other = MetricMeta("code_bits", "bits", False, "weights")
    assert header(size) == "size [MB] ↓" and header(other) == "code_bits [bits] ↓"


def test_a_bits_metric_of_another_kind_keeps_its_unit_in_tables(tmp_path: Path) -> None:
    rec = make_record(values={"entropy": 3_000_000.0})
    rec["metrics"]["entropy"].update(unit="bits", kind="weights", higher_is_better=False)
    table = _table(_run(tmp_path, [rec], metrics=("entropy", "bits")))
    assert table["entropy [bits] ↓"].iloc[0] == 3_000_000.0 and table["size [MB] ↓"].iloc[0] == 0.125


def test_an_unknown_primary_metric_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _run(tmp_path, [make_record(values={"top1": 50.0})], report={"primary": "top-1"})
    with pytest.raises(UserError, match="report.primary: 'top-1' is not one of this run's metrics"):
        load_frame(folder)
    assert run_cli("report", str(folder)) == 2
    assert "report.primary" in capsys.readouterr().err
    with pytest.raises(UserError):
        primary_metric([MetricMeta("top1", "%", True, "quality")], "top5")


def test_report_loads_neither_the_runner_nor_torch() -> None:
    code = (
        "import sys, b2s_bench.reporting.tables, b2s_bench.reporting.theory, b2s_bench.reporting.summary, b2s_bench.reporting.compare, b2s_bench.reporting.site; "
        "print(sorted(m for m in ('torch', 'b2s_bench.suites.cells', 'b2s_bench.execution.runner') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_below_the_gaussian_limit_is_flagged_with_a_note(tmp_path: Path) -> None:
    folder = _run(
        tmp_path,
        [
            make_record("dense", "dense", bits=8_000_000, values={"top1": 90.0}),
            # at 4 bits per weight the limit is 2^-8 = 0.0039 relative MSE: 0.001 is below, 0.01 above
            make_record("lowrank(rank=4)", "lowrank", values={"top1": 80.0}, details=rd_details(4.0, 0.001)),
            make_record("quantize(bits=4)", values={"top1": 85.0}, details=rd_details(4.0, 0.01)),
            # the record's own verdict wins over the recomputed one
            make_record(
                "svd(energy=0.9)", "lowrank", bits=900_000, values={"top1": 70.0}, details=rd_details(4.0, 0.01, below=True)
            ),
            # ... except at 32 bits per weight, where a raw fp32 copy is exact: an identity cell, even one
            # whose record (made before that rule) flags itself
            make_record("identity quantize(bits=32)", values={"top1": 90.0}, details=rd_details(32.0, 0.0, below=True)),
        ],
    )
    table = _table(folder).set_index("method")
    assert table["note"].to_dict() == {
        "dense": "",
        "lowrank(rank=4)": BELOW_LIMIT,
        "quantize(bits=4)": "",
        "svd(energy=0.9)": BELOW_LIMIT,
        "identity quantize(bits=32)": "",
    }
    assert run_cli("report", str(folder)) == 0
    text = (folder / "leaderboard.md").read_text()
    assert "structured (correlated or low rank)" in text and "miscounted" in text and "not Gaussian" in text
    rd = text.split("### Weight error against the Gaussian rate–distortion limit")[1]
    row = next(ln for ln in rd.splitlines() if "lowrank(rank=4)" in ln)
    assert "-30" in row and "-24.08" in row and BELOW_LIMIT in row  # 10·log10(0.001), and the limit at 4 bits
    assert (folder / "weights.png").is_file()
    assert "⚠" in summary_text(folder)


def test_no_gap_at_16_bits_per_coded_weight_and_every_column_states_its_definition(tmp_path: Path) -> None:
    folder = _run(
        tmp_path,
        [
            make_record("dense", "dense", bits=8_000_000, values={"top1": 90.0}),
            # an fp32 INR: 1e-12 relative MSE against a bound of 2^-64 (−193 dB); a gap of 73 dB means nothing
            make_record("inr(bits=32)", "inr", values={"top1": 89.0}, details=rd_details(32.0, 1e-12)),
            make_record("quantize(bits=4)", values={"top1": 85.0}, details=rd_details(4.0, 0.01)),
        ],
    )
    from b2s_bench.reporting.theory import rate_distortion_table

    frame, _, _ = load_frame(folder)
    table = rate_distortion_table(frame).set_index("method")
    assert math.isnan(table.loc["inr(bits=32)", "gap [dB]"])  # None, a missing value in the frame
    assert table.loc["quantize(bits=4)", "gap [dB]"] == pytest.approx(-20 + 24.08, abs=0.01)
    assert run_cli("report", str(folder)) == 0
    text = (folder / "leaderboard.md").read_text()
    row = next(ln for ln in text.split("### Weight error against")[1].splitlines() if "inr(bits=32)" in ln)
    assert row.split("|")[-3].strip() == "–"  # the gap column: n/a
    assert "bits/coded weight" in text
    # the column legend: each metric's header with its description, once
    assert "Columns. " in text and "top1 [%] ↑: top1 of the cell" in text


def test_summary_lists_the_top_methods_within_100_columns(tmp_path: Path) -> None:
    long = "pipeline(" + "x" * 120 + ")"
    records = [make_record("dense", "dense", bits=8_000_000, values={"top1": outcomes(0.9, 400, 0)})]
    records += [make_record(f"q{i}", bits=1_000_000 + i, values={"top1": outcomes(0.5 + i / 20, 400, i)}) for i in range(7)]
    records += [make_record(long, "pruning", values={"top1": outcomes(0.99, 400, 9)}), make_record("broken", status="error")]
    folder = _run(tmp_path, records)
    text = summary_text(folder, top=3)
    lines = text.splitlines()
    assert all(len(ln) <= 100 for ln in lines)
    ranked = [ln.split()[1] for ln in lines if ln[:4].strip().isdigit()]
    assert ranked[0].startswith("pipeline(xxx") and ranked[1:] == ["q6", "q5"]
    assert "(+5 more methods)" in text and "1 failed cell" in text and "dense 90.00 [" in text
    assert "[" in lines[2] and "8.00x" in lines[2]  # ratio and the interval of the best method
    assert run_cli("report", str(folder), "--format", "summary") == 0
    assert (folder / "summary.txt").read_text().strip() == summary_text(folder)


def test_the_family_style_is_fixed_and_stable() -> None:
    from b2s_bench_plugins.reporting.plots import FAMILY_STYLES, family_style

    assert family_style("quantization") == ("#2ca02c", "o") and family_style("pruning") == ("#ff7f0e", "^")
    composite = family_style("pruning+quantization")
    assert composite == family_style("pruning+quantization") and composite not in FAMILY_STYLES.values()
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from b2s_bench_plugins.reporting.plots import family_style; print(family_style('pruning+quantization'))",
        ],
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
        check=True,
    ).stdout
    assert out.strip() == str(composite)  # not Python's salted hash


def test_the_size_axis_is_labelled_in_plain_numbers() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from b2s_bench_plugins.reporting.plots import _plain_log_axis

    fig, ax = plt.subplots()
    ax.set_xscale("log")
    ax.set_xlim(0.3, 20)
    _plain_log_axis(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if 0.3 <= t.get_position()[0] <= 20]
    plt.close(fig)
    assert labels == ["0.5", "1", "2", "5", "10", "20"]


def test_convergence_curves_kept_by_records_are_drawn_and_embedded(tmp_path: Path) -> None:
    curve = {"step": [100, 200, 300], "psnr": [20.0, 24.5, 25.1], "train_loss": [0.3, 0.2, 0.1]}
    folder = _run(
        tmp_path,
        [
            make_record("dense", "dense", bits=8_000_000, values={"top1": 90.0}),
            make_record("big2small(steps=300)", "inr", values={"top1": 80.0}, details={"curve": curve}),
            make_record(
                "big2small(steps=300) > quantize(bits=6)",
                "inr",
                values={"top1": 79.0},
                details={"stages": [{"curve": curve}, {"weight_bits": 6}]},
            ),  # a pipeline: kept by its stage
            make_record("quantize(bits=4)", values={"top1": 85.0}),
        ],
    )
    frame, _, _ = load_frame(folder)
    assert frame.set_index("method").loc["big2small(steps=300)", "curve"] == curve
    assert frame.set_index("method").loc["big2small(steps=300) > quantize(bits=6)", "curve"] == curve
    assert run_cli("report", str(folder)) == 0
    png = folder / "convergence.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "alt='convergence.png'" in (folder / "leaderboard.html").read_text()


def test_numbers_carry_the_precision_of_their_interval(tmp_path: Path) -> None:
    from b2s_bench_plugins.reporting.writers import interval_decimals

    assert (interval_decimals(4.4), interval_decimals(0.044), interval_decimals(12.0)) == (1, 3, 0)
    folder = write_run(
        tmp_path / "run",
        [
            make_record("dense", "dense", bits=8_000_000, values={"top1": outcomes(0.72222, 900, 0)}),
            make_record("quantize(bits=4)", values={"top1": outcomes(0.125, 900, 1)}),
            make_record("prune(sparsity=0.5)", "pruning", bits=4_000_000, values={"top1": outcomes(0.5, 900, 2)}),
        ],
    )
    assert run_cli("report", str(folder), "--format", "md") == 0
    lines = (folder / "leaderboard.md").read_text().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| method"))
    columns = [c.strip() for c in lines[head].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[head + 2 : head + 5]]
    values = [row[columns.index("top1 [%] ↑")] for row in rows]
    intervals = [row[columns.index("top1 95% CI")] for row in rows]
    # 900 examples: intervals a few points wide, so one decimal, in every row of the column (72.2, not 72.222)
    assert sorted(values) == ["12.4", "50.0", "72.2"], values  # 112/900, 450/900, 650/900
    assert all(re.fullmatch(r"\[\d+\.\d, \d+\.\d\]", ci) for ci in intervals), intervals


def test_summary_never_cuts_two_settings_to_the_same_row_name(tmp_path: Path) -> None:
    from b2s_bench.reporting.summary import summary_text

    methods = [f"quantize(bits=4, granularity=group, scale_bits=16, group_size={g})" for g in (32, 64, 128)]
    folder = write_run(
        tmp_path / "run",
        [
            make_record("dense", "dense", bits=8_000_000, values={"top1": 90.0}),
            *[make_record(m, bits=1_000_000 + i, values={"top1": 80.0 - i}) for i, m in enumerate(methods)],
        ],
    )
    lines = summary_text(folder, width=70).splitlines()
    rows = [line for line in lines if re.match(r"\s+\d+ ", line)]
    names = [re.split(r"\s{2,}", row.strip(), maxsplit=1)[0] for row in rows]
    assert len(rows) == 3 and len(set(names)) == 3, rows  # cut, but each keeps its group_size
    assert all("group_size=" + g in row for row, g in zip(rows, ("32", "64", "128"), strict=True))
    assert all(len(line) <= 70 for line in lines if not line.startswith("  /"))


def test_short_labels_are_unique_and_fit() -> None:
    from b2s_bench.reporting import short_labels

    labels = [f"quantize(bits={b}, granularity=group, group_size={g})" for b in (3, 4) for g in (32, 128)]
    labels += ["prune(sparsity=0.5)", "x" * 30 + "1" + "y" * 30, "x" * 30 + "2" + "y" * 30]
    for width in (12, 20, 28, 40):
        short = short_labels(labels, width)
        assert len(set(short.values())) == len(labels) and all(len(v) <= width for v in short.values())
        assert short["prune(sparsity=0.5)"] == ("prune(sparsity=0.5)" if width >= 19 else "prune(spars…")
    assert short_labels(labels, 20)[labels[0]] == "quantize(bits=3,…32)"  # the head and the differing end


def test_leaderboards_show_each_methods_operating_point_and_where_defaults_come_from(run_dir: Path) -> None:
    """quantize(bits=4) changed quantize's default 8 bits; bits=8 and prune(sparsity=0.5) are the defaults;
    a note under the tables says where each compressor's defaults come from (its records' defaults_source)."""
    text = (run_dir / "leaderboard.md").read_text()
    rows = {r.split("|")[1].strip(): r for r in text.splitlines() if r.startswith("| ") and "|" in r[2:]}
    header_row = next(r for r in text.splitlines() if r.startswith("| method"))
    column = [c.strip() for c in header_row.split("|")].index("operating point")
    cell = {m: [c.strip() for c in r.split("|")][column] for m, r in rows.items()}
    assert cell["quantize(bits=4)"] == "changed: bits"
    assert cell["quantize(bits=8)"] == "defaults" and cell["prune(sparsity=0.5)"] == "defaults"
    assert cell["dense"] == ""
    assert any(ln.startswith("Operating point:") for ln in text.splitlines())
    lines = text.splitlines()
    assert any(ln.startswith("- quantize: ours: 8-bit per-channel") for ln in lines)
    assert any(ln.startswith("- prune: ours: 50 % global") for ln in lines)
    html = (run_dir / "leaderboard.html").read_text()
    assert "operating point" in html and "changed: bits" in html and "Operating point: " in html


def test_operating_point_texts_for_pipelines_budgets_and_old_records(tmp_path: Path) -> None:
    from b2s_bench.reporting.tables import OPERATING_POINT, operating_point_text

    prune = {"name": "prune", "changed": ["sparsity"], "budget": [], "at_defaults": False, "defaults_source": "ours"}
    quantize = {"name": "quantize", "changed": [], "budget": [], "at_defaults": True, "defaults_source": "ours"}
    big = {"name": "big2small", "changed": [], "budget": ["steps"], "at_defaults": True, "defaults_source": "the paper"}
    assert operating_point_text([prune, quantize]) == "changed: prune sparsity"
    assert operating_point_text([{**prune, "changed": []}, quantize]) == "defaults"
    assert operating_point_text([big]) == "defaults · budget: steps"
    assert operating_point_text([]) == "" and operating_point_text([{"name": "prune"}]) is None
    # records written before the fields: no column (nothing in it would be known) and no note is made up
    old = write_run(tmp_path / "old", [make_record("dense", "dense"), make_record()])
    assert run_cli("report", str(old)) == 0
    frame, metas, settings = load_frame(old)
    ((_, table),) = leaderboards(frame, metas, settings)
    assert OPERATING_POINT not in table.columns
    assert "Operating point:" not in (old / "leaderboard.md").read_text()
    # beside a newer record, an old one says "–"
    new = make_record("quantize(bits=6)")
    new["compressor"]["pipeline"] = [{**quantize, "config": {"bits": 6}, "changed": ["bits"]}]
    mixed = write_run(tmp_path / "mixed", [make_record("dense", "dense"), make_record(), new])
    frame, metas, settings = load_frame(mixed)
    ((_, table),) = leaderboards(frame, metas, settings)
    points = set(table[OPERATING_POINT])
    assert "–" in points and "changed: bits" in points
