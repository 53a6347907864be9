"""Writing a run folder's reports from its records (every reporter, or some), and telling whether
the reports on disk are current. The ``report`` and ``run`` commands and a batch job's cooperating
run (:mod:`b2s_bench.execution.runner`) write reports through here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import UserError
from ..plugins import Plugins
from ..store.records import write_atomic

__all__ = ["write_report", "reports_current", "kept_summary", "keep_summary", "REPORTS", "SUMMARY", "ALIASES"]

ALIASES = {"md": "markdown"}
REPORTS = ".reports.json"  # the files the last full report wrote
SUMMARY = ".summary.txt"  # the terminal summary `run` printed last, kept for a run that changes nothing


def write_report(
    out_dir: str | os.PathLike[str], plugins: Plugins, formats: list[str] | None = None, all_records: bool = False
) -> list[Path]:
    from .spec import ReportContext
    from .tables import load_frame  # pandas loads only when a report is written

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
    return min(f.stat().st_mtime for f in files) >= _newest_input(out_dir)


def _newest_input(out_dir: Path) -> float:
    """The modification time of the newest record or of the run manifest."""
    return max([p.stat().st_mtime for p in (out_dir / "cells").glob("*.json")] + [(out_dir / "run.json").stat().st_mtime])


def keep_summary(out_dir: Path, text: str) -> None:
    """Keep the terminal summary of the run folder's records, for :func:`kept_summary`."""
    write_atomic(out_dir / SUMMARY, text)


def kept_summary(out_dir: Path) -> str | None:
    """The kept terminal summary when it is newer than every record and the run manifest (so it says what
    :func:`~b2s_bench.reporting.summary.summary_text` would, without loading pandas), else None."""
    path = out_dir / SUMMARY
    try:
        if path.stat().st_mtime < _newest_input(out_dir):
            return None
        return path.read_text()
    except (OSError, ValueError):
        return None
