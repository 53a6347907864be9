"""The published results: valid records, one clean commit each, and a README table that is current."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from helpers import run_cli

from b2s_bench.store.records import load_json, record_problems

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
PUBLISHED = sorted(p for p in RESULTS.iterdir() if (p / "run.json").is_file()) if RESULTS.is_dir() else []


def test_the_results_readme_table_is_made_from_the_published_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    # --check with no file checks results/README.md, the page republish.sh writes
    assert run_cli("results", "--check") == 0


@pytest.mark.parametrize("folder", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_a_published_run_is_whole_and_comes_from_one_clean_commit(folder: Path) -> None:
    manifest = json.loads((folder / "run.json").read_text())
    commits = set()
    for cid in manifest["cells"]:
        data, why = load_json(folder / "cells" / f"{cid}.json")
        assert why is None and record_problems(data, cid, cid) == [], cid
        commits.add(data["environment"]["git_commit"])
    assert len(commits) == 1 and not next(iter(commits)).endswith("-dirty"), commits
    assert manifest.get("wall_seconds") and manifest.get("peak_rss_mb")


# The entropy prose table of results/README.md, row by row: the leaderboard rows (by cell id) that
# each cell of the table quotes, "alone" and "with the entropy stage" (several with " / ").
ENTROPY_ROWS = {
    "per-channel quantization, 3 bits (Huffman)": ("9ee6cda5ed2f9950", ["9d38104c2f8af38e"]),
    "per-channel quantization, 4 bits (Huffman / ANS)": ("da7024bb42542b7f", ["1b965abba7604b17", "97dfb53b0e6444e4"]),
    "per-channel quantization, 6 bits (Huffman)": ("549c6ff2ed716047", ["7436b1d133713021"]),
    "pruning 80 % then 6-bit quantization (Huffman)": ("82df3e631932dcc9", ["384efb8aaf735d86"]),
    "Hyper-Compression, released (Huffman)": ("8bedb9094f50554a", ["38ba78c2328c5380"]),
    "ECSQ at 3 bits after coding (ANS)": ("a7a0dc52f6021554", ["ad59641677f56992"]),
}


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+\.\d+", text)]


def test_the_entropy_prose_table_quotes_the_published_leaderboard() -> None:
    folder = RESULTS / "entropy"
    if not (folder / "leaderboard.csv").is_file():
        pytest.skip("results/entropy is not published")
    with open(folder / "leaderboard.csv", newline="") as f:
        rows = {r["cell"]: r for r in csv.DictReader(f)}
    bpw, gap, top1 = "bits_per_weight [bits/weight] ↓", "weight_rd_gap_db [dB] ↓", "top1 [%] ↑"
    table = {
        cells[1].strip(): cells[2:5]
        for line in (RESULTS / "README.md").read_text().splitlines()
        if (cells := line.split("|")) and len(cells) == 6 and cells[1].strip() in ENTROPY_ROWS
    }
    assert table.keys() == ENTROPY_ROWS.keys(), "a row of the entropy prose table was renamed or removed"
    for label, (alone, coded) in ENTROPY_ROWS.items():
        quoted_alone, quoted_coded, quoted_top1 = table[label]
        want_alone = [round(float(rows[alone][bpw]), 2), round(float(rows[alone][gap]), 1)]
        assert _numbers(quoted_alone) == want_alone, (label, quoted_alone, want_alone)
        want_coded = [round(float(rows[c][bpw]), 2) for c in coded] + [round(float(rows[c][gap]), 1) for c in coded]
        assert _numbers(quoted_coded) == want_coded, (label, quoted_coded, want_coded)
        assert _numbers(quoted_top1) == [round(float(rows[alone][top1]), 1)], (label, quoted_top1)
        assert all(rows[c][top1] == rows[alone][top1] for c in coded), label  # coding changes no weight
