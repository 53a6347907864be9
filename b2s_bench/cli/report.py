"""``b2s-bench report RUN_DIR``: rebuild every table and plot from the stored records alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..plugins import Plugins
from ..reporting.files import ALIASES, REPORTS, reports_current, write_report  # noqa: F401  (the report command's own)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report",
        help="rebuild leaderboards from a run folder's records",
        description="Rebuild leaderboards, plots and theory checks from stored records.",
    )
    p.add_argument("run_dir", type=Path, help="a run folder (results/<suite>)")
    p.add_argument(
        "--format",
        action="append",
        default=None,
        dest="formats",
        help="md, csv, html, json or another reporter (repeatable; default: the suite's report settings)",
    )
    p.add_argument("--all-records", action="store_true", help="include records of cells that are no longer in the suite")
    return p


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    files = write_report(args.run_dir, plugins, args.formats, args.all_records)
    for f in files:
        print(f)
    return 0
