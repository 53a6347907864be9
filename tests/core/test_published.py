"""The published results: valid records, one clean commit each, and a README table that is current."""

from __future__ import annotations

import json
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
