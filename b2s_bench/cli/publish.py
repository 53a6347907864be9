"""``b2s-bench publish RUN_DIR [--to DIR]``: a folder to commit or share.

It holds the run's records (``cells/*.json``, only the cells of the suite as last run), the tables
rebuilt from them, and a README that says which command, code and machines made them. Artifacts
(safetensors, often hundreds of MB) stay behind. Publishing an unfinished run is refused unless
asked for, so a published leaderboard never silently lacks cells.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..plugins import Plugins
from ..records import cell_path, read_record, write_atomic
from .report import write_report


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("publish", help="copy a run's records and rebuilt tables into a folder to commit",
                       description="Copy a run's records (not its artifacts) to DIR, rebuild every table "
                                   "there from them, and write a README saying what made them.")
    p.add_argument("run_dir", type=Path, help="a run folder (results/<suite> or --out of `run`)")
    p.add_argument("--to", type=Path, default=None, help="destination (default: results/<suite>)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="publish although some cells of the suite have no record yet")
    return p


def _manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no run.json inside); run a suite first")
    return json.loads(path.read_text())


def _values(records: list[dict[str, Any]], *keys: str) -> str:
    seen: Counter[str] = Counter()
    for rec in records:
        value: Any = rec
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        seen[str(value)] += 1
    return ", ".join(f"{v} ({n})" if len(seen) > 1 else v for v, n in seen.most_common())


def readme(manifest: dict[str, Any], records: list[dict[str, Any]], missing: int) -> str:
    status = Counter(r.get("status") for r in records)
    started = min((r.get("started_at") or "" for r in records), default="")
    finished = max((r.get("finished_at") or "" for r in records), default="")
    seconds = sum(float((r.get("timings") or {}).get("total") or 0.0) for r in records)
    lines = [
        f"# {manifest['suite']}: published results",
        "",
        manifest.get("description") or "",
        "",
        f"- Made by: `{manifest['command']}`" if manifest.get("command") else "- Made by: `b2s-bench run` "
        f"on `{manifest.get('file')}` (the exact command line was not recorded)",
        f"- Suite file: `{manifest.get('file')}`",
        f"- Cells: {len(records)} recorded ({status.get('ok', 0)} ok, {status.get('error', 0)} failed)"
        + (f", {missing} without a record yet" if missing else ""),
        f"- Computed between {started} and {finished} (UTC); {seconds:,.0f} s of cell time in all",
        f"- Devices: {_values(records, 'environment', 'device_name')}",
        f"- torch {_values(records, 'environment', 'torch')}; b2s-bench {_values(records, 'environment', 'b2s_bench')}",
        f"- Code (git commit): {_values(records, 'environment', 'git_commit')}",
        "",
        "`leaderboard.md` is the table to read (also `.csv`, `.html`, `.json`; `pareto.png`); "
        "`records.csv` has every raw field and `failed.csv` the failures. All of them are rebuilt from "
        "`cells/*.json` by `b2s-bench report` on this folder.",
        "",
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    run_dir: Path = args.run_dir
    manifest = _manifest(run_dir)
    ids: list[str] = list(manifest.get("cells", []))
    records = {cid: read_record(cell_path(run_dir, cid)) for cid in ids}
    missing = [cid for cid, rec in records.items() if rec is None]
    if missing and not args.allow_incomplete:
        raise UserError(f"{len(missing)} of {len(ids)} cells of {run_dir} have no record yet (e.g. {missing[0]}); "
                        f"finish the run (`b2s-bench run` on the same suite resumes) or pass --allow-incomplete")
    dest: Path = args.to or Path("results") / manifest["suite"]
    if dest.resolve() != run_dir.resolve():
        cells = dest / "cells"
        if cells.is_dir():  # the published folder mirrors the run: drop records of other cells
            for stale in cells.glob("*.json"):
                if stale.stem not in records or records[stale.stem] is None:
                    stale.unlink()
        cells.mkdir(parents=True, exist_ok=True)
        for cid, rec in records.items():
            if rec is not None:
                write_atomic(cell_path(dest, cid), cell_path(run_dir, cid).read_text())
        write_atomic(dest / "run.json", (run_dir / "run.json").read_text())
    written = write_report(dest, plugins)
    write_atomic(dest / "README.md", readme(manifest, [r for r in records.values() if r is not None], len(missing)))
    for path in [*written, dest / "README.md"]:
        print(path)
    return 0
