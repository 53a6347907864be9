"""Reports are rebuilt from stored records alone, in every format, deterministically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import run_cli

from b2s_bench.report import leaderboards, load_frame


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
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "leaderboard.json", "pareto.png",
                 "failed.csv", "records.csv"):
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
    (_, table), = leaderboards(frame, metas, settings)
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
    assert "http" not in html.split("<body>")[1]  # self-contained: no external resources
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
