"""``b2s-bench run [SUITE]``: run a suite (the embedded default when SUITE is omitted), then report."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..plugins import Plugins
from ..runner import Runner, RunOptions
from ..suite import load_suite
from .report import write_report


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="run a suite and write its leaderboard",
                       description="Run every cell of a suite that has no valid record yet, then rebuild the reports.")
    p.add_argument("suite", nargs="?", default=None,
                   help="a suite file, or the name of a shipped suite (default: the embedded offline suite)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where to run (auto: the suite's device, CUDA when present)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: results/<suite name>)")
    p.add_argument("-k", dest="pattern", default=None, metavar="PATTERN",
                   help="only cells whose 'model method id' matches (substring or glob)")
    p.add_argument("--force", action="store_true", help="recompute cells that already have records")
    p.add_argument("--no-progress", action="store_true", help="never show progress bars")
    p.add_argument("--quiet", action="store_true", help="do not print the leaderboard")
    return p


def reports_current(out: Path) -> bool:
    """True when leaderboard.md is newer than every record and the run manifest."""
    board = out / "leaderboard.md"
    if not board.is_file():
        return False
    newest = max([p.stat().st_mtime for p in (out / "cells").glob("*.json")] + [(out / "run.json").stat().st_mtime])
    return board.stat().st_mtime >= newest


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    suite = load_suite(args.suite, plugins)
    out = args.out or Path("results") / suite.name
    command = shlex.join(["b2s-bench", *getattr(args, "argv", [])])
    runner = Runner(suite, plugins, RunOptions(out, args.device, args.pattern, args.force,
                                               False if args.no_progress else None, command))
    todo, done = runner.pending()
    print(f"suite {suite.name}: {len(runner.cells)} cells on {runner.device.type} "
          f"({len(done)} done, {len(todo)} to run) -> {out}", file=sys.stderr)
    summary = runner.run()
    if summary.computed == 0 and reports_current(out):
        files = []
    else:
        files = write_report(out, plugins)
    if not args.quiet:
        md = out / "leaderboard.md"
        if md.is_file():
            print(md.read_text())
    wrote = f"wrote {', '.join(str(f) for f in files)}" if files else f"reports in {out} are up to date"
    print(f"{summary.computed} computed, {summary.skipped} skipped, {len(summary.failed)} failed "
          f"in {summary.seconds:.1f} s; {wrote}", file=sys.stderr)
    return summary.exit_code
