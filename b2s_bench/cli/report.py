"""``b2s-bench report RUN_DIR``: rebuild every table and plot from the stored records alone."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import UserError
from ..plugins import Plugins

ALIASES = {"md": "markdown"}


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
    frame, metas, settings = load_frame(out_dir, only_current=not all_records)
    if formats is None:
        names = list(settings.get("formats", ["markdown", "csv", "html", "json"])) + list(settings.get("plots", ["pareto"]))
    else:
        names = [ALIASES.get(f, f) for f in formats]
    ctx = ReportContext(out_dir, frame, metas, settings, settings.get("suite", out_dir.name))
    written: list[Path] = []
    for name in names:
        written.extend(plugins.reporters.get(name).write(ctx))
    return written


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    files = write_report(args.run_dir, plugins, args.formats, args.all_records)
    for f in files:
        print(f)
    return 0
