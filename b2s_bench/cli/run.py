"""``b2s-bench run [SUITE]``: run a suite (the embedded default when SUITE is omitted), then report."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..plugins import Plugins
from ..sources import cache_dir

if TYPE_CHECKING:  # torch loads only when a suite is run: `b2s-bench --help` stays fast
    from ..execution.prepare import PreparedRun
    from ..execution.runner import RunOptions, RunSummary

#: Where runs go by default: users' runs are git-ignored; only `publish` writes results/.
RUNS = Path("runs")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run",
        help="run a suite and write its leaderboard",
        description="Run every cell of a suite that has no valid record yet, then rebuild the reports.",
    )
    p.add_argument(
        "suite",
        nargs="?",
        default=None,
        help="a suite file, or the name of a shipped suite (default: the embedded offline suite)",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where to run (auto: the suite's device, CUDA when present)",
    )
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<suite name>)")
    p.add_argument(
        "-k",
        dest="pattern",
        default=None,
        metavar="PATTERN",
        help="only cells whose 'model method id' matches (substring or glob)",
    )
    p.add_argument("--force", action="store_true", help="recompute cells that already have records")
    p.add_argument("--no-progress", action="store_true", help="never show progress bars")
    p.add_argument("--quiet", action="store_true", help="do not print the summary of the leaderboard")
    p.add_argument(
        "--download",
        action="store_true",
        help="allow the network: download `pretrained: true` weights (and prepare other weights) first, "
        "then check what else is missing",
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="when some models' data or weights are missing here, run the cells that are ready "
        "(default: stop before running anything, exit 3)",
    )
    g = p.add_argument_group("where cells run (docs/clusters.md)")
    g.add_argument(
        "--executor",
        default=None,
        metavar="NAME",
        help="where cells run (default: the registered executor of lowest rank, isolated worker "
        "processes); `b2s-bench ls executors` lists them; also $B2S_BENCH_EXECUTOR. Cluster "
        "executors add their own options (marked 'from a plugin')",
    )
    g.add_argument(
        "--workers", default=None, metavar="N|auto", help="worker processes (auto: one per GPU, or CPU cores / runtime.threads)"
    )
    g.add_argument(
        "--cell-timeout",
        default=None,
        metavar="SECONDS",
        help="stop a cell after this long and record it 'timed out' (default: runtime.cell_timeout, 6 h)",
    )
    g.add_argument(
        "--detach", action="store_true", help="submit and return (cluster executors); follow with `b2s-bench status DIR`"
    )
    return p


def _workers(value: str | None) -> int | None:
    if value is None or value == "auto":
        return None
    try:
        count = int(value)
    except ValueError:
        raise UserError(f"--workers must be a positive integer or auto, got {value!r}") from None
    if count < 1:
        raise UserError(f"--workers must be a positive integer or auto, got {value!r}")
    return count


def _cell_timeout(value: str | None) -> float | None:
    """--cell-timeout as the suite's ``runtime.cell_timeout`` takes it: finite seconds >= 0, 0 for no limit."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise UserError(f"--cell-timeout must be a number of seconds >= 0 (0: no limit), got {value!r}")
    return seconds


def options_from(args: argparse.Namespace, out: Path) -> RunOptions:
    from ..execution.runner import RunOptions

    command = shlex.join(["b2s-bench", *getattr(args, "argv", [])])
    return RunOptions(
        out_dir=out,
        force=args.force,
        progress=False if args.no_progress else None,
        command=command,
        executor=args.executor,
        workers=_workers(args.workers),
        cell_timeout=_cell_timeout(args.cell_timeout),
        detach=args.detach,
    )


def ready_models(args: argparse.Namespace, run: PreparedRun) -> tuple[str, ...]:
    """Check what the selected cells need before touching the network or the disk: data, weights,
    packages. Stop (exit 3) with what to do, or with --keep-going skip the models that are not ready;
    stop on a mistake in the suite (an unknown model, a file that is not a checkpoint: exit 2) either way."""
    from ..execution.prerequisites import check_cells

    plugins, suite, cells = run.plugins, run.suite, list(run.cells)
    if args.download:
        for model in {id(c.model): c.model for c in cells}.values():
            source = plugins.models.get(model.request.source)
            if source.prepare is not None:
                source.prepare(model.request)
    if args.pattern and not cells:
        raise UserError(
            f"-k {args.pattern!r} matches none of the cells of suite {suite.name}; `b2s-bench validate "
            f"{args.suite or ''}`".rstrip()
            + " lists them"
        )
    found = check_cells(suite, plugins, cells)
    if found.ok:
        return ()
    if not args.keep_going or found.mistakes:  # a mistake in the suite is never skipped: it needs fixing (exit 2)
        raise found.error()
    for label, messages in found.missing.items():
        for message in messages:
            print(f"skipping {label}: {message}", file=sys.stderr)
    if not found.ready:
        raise found.error()
    return tuple(found.missing)


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    from ..execution.prepare import prepare_run
    from ..execution.prerequisites import check_writable
    from ..execution.runner import Runner

    plugin_options = getattr(args, "plugin_options", None) or {}  # applied by cli.main already
    checked = prepare_run(
        args.suite, plugins=plugins, plugin_options=plugin_options, device=args.device, pattern=args.pattern
    )  # the cells as the suite names them, before any weights are made
    suite = checked.suite
    out = args.out or RUNS / suite.name
    check_writable(out)
    check_writable(cache_dir(), "the cache folder", "set $B2S_BENCH_CACHE to a folder you can write")
    skip = ready_models(args, checked)
    # the models' weights made here first (a zoo model trained once), so the cell ids hash what will be loaded
    prepared = prepare_run(
        suite,
        plugins=plugins,
        plugin_options=plugin_options,
        device=args.device,
        pattern=args.pattern,
        skip_models=skip,
        models=True,
    )
    runner = Runner(prepared, options_from(args, out))
    todo, done = runner.pending()
    print(
        f"suite {suite.name}: {len(runner.cells)} cells on {prepared.device_type} "
        f"({len(done)} done, {len(todo)} to run) -> {out}",
        file=sys.stderr,
    )
    if done:
        print(f"{len(done)} cells already done in {out} (their records are reused; --force recomputes)", file=sys.stderr)
    summary = runner.run()
    return finish(args, plugins, out, summary)


def finish(args: argparse.Namespace, plugins: Plugins, out: Path, summary: RunSummary) -> int:
    from ..reporting.files import keep_summary, kept_summary, reports_current, write_report

    if summary.detached:
        print(f"submitted; follow the run with `b2s-bench status {out}`", file=sys.stderr)
        return 0
    unchanged = summary.computed == 0 and reports_current(out)  # nothing to rebuild: pandas never loads
    files = [] if unchanged else write_report(out, plugins)
    if not args.quiet:  # a short summary for the terminal; the full tables are in the files
        text = kept_summary(out) if unchanged else None
        if text is None:
            from ..reporting.summary import summary_text

            text = summary_text(out)
            keep_summary(out, text)
        print(text)
    wrote = f"wrote {len(files)} report files into {out}" if files else f"reports in {out} are up to date"
    others = f", {summary.by_others} computed by another run" if summary.by_others else ""
    print(
        f"{summary.computed} computed, {summary.skipped} skipped{others}, {len(summary.failed)} failed "
        f"in {summary.seconds:.1f} s; {wrote}",
        file=sys.stderr,
    )
    return summary.exit_code
