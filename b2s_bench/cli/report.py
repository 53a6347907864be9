"""``b2s-bench report RUN_DIR``: rebuild every table and plot from the stored records alone."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import UserError
from ..plugins import Plugins
from ..records import write_atomic

ALIASES = {"md": "markdown"}
REPORTS = ".reports.json"  # the files the last full report wrote


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="rebuild leaderboards from a run folder's records",
                       description="Rebuild leaderboards, plots and theory checks from stored records.")
    p.add_argument("run_dir", type=Path, help="a run folder (results/<suite>)")
    p.add_argument("--format", action="append", default=None, dest="formats",
                   help="md, csv, html, json or another reporter (repeatable; default: the suite's report settings)")
    p.add_argument("--all-records", action="store_true",
                   help="include records of cells that are no longer in the suite")
    return p


def write_report(out_dir: str | os.PathLike[str], plugins: Plugins, formats: list[str] | None = None,
                 all_records: bool = False) -> list[Path]:
    from ..report import load_frame  # pandas loads only when a report is written
    from ..reportspec import ReportContext

    out_dir = Path(out_dir)
    if not (out_dir / "cells").is_dir():
        raise UserError(f"{out_dir} is not a run folder (no cells/ inside); run a suite first")
    dropped: list[tuple[Path, str]] = []
    frame, metas, settings = load_frame(out_dir, only_current=not all_records, dropped=dropped)
    for path, why in dropped:  # never silently: a record left out of the tables is named
        print(f"warning: {path} is not a valid record and is left out of the report: {why}", file=sys.stderr)
    if formats is None:
        names = list(settings.get("formats", ["markdown", "csv", "html", "json"])) + list(settings.get("plots", ["pareto"]))
    else:
        names = [ALIASES.get(f, f) for f in formats]
    ctx = ReportContext(out_dir, frame, metas, settings, settings.get("suite", out_dir.name))
    written: list[Path] = []
    for name in names:
        written.extend(plugins.reporters.get(name).write(ctx))
    if formats is None:  # the full set: `run` checks later that every one of them still exists
        write_atomic(out_dir / REPORTS, json.dumps(sorted(str(p.relative_to(out_dir)) for p in written), indent=1))
    return written


def reports_current(out_dir: Path) -> bool:
    """True when every report file of the last full report exists and is newer than every record and
    the run manifest."""
    listed = out_dir / REPORTS
    try:
        names = json.loads(listed.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    files = [out_dir / n for n in names]
    if not files or not all(f.is_file() for f in files):
        return False
    newest = max([p.stat().st_mtime for p in (out_dir / "cells").glob("*.json")] + [(out_dir / "run.json").stat().st_mtime])
    return min(f.stat().st_mtime for f in files) >= newest


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    files = write_report(args.run_dir, plugins, args.formats, args.all_records)
    for f in files:
        print(f)
    return 0
