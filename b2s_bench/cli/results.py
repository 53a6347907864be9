"""``b2s-bench results [ROOT]``: the table of published runs, made from their files alone.

The published-results table of ``results/README.md`` is this command's output between two markers,
so no figure in it can go stale: ``--write`` replaces it, ``--check`` fails (exit 1) when it differs
(a test runs the check). Both default to ``ROOT/README.md``, the page that sits next to the runs it
lists; the table's links are relative to the file written, so they resolve wherever it lives.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..plugins import Plugins
from ..reporting.site import is_moved_aside
from ..store.records import SKIPPED_STATUSES, iter_records, write_atomic

START = "<!-- results-table: made by `b2s-bench results --write`; do not edit by hand -->"
END = "<!-- /results-table -->"
_ROOT_README = Path("<ROOT>/README.md")  # a sentinel: --write/--check given without a file


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "results",
        help="the table of published runs under results/ (for results/README.md)",
        description="Print the table of published runs, built from their run.json and records.",
    )
    p.add_argument("root", nargs="?", type=Path, default=Path("results"), help="the published runs (default: results)")
    what = p.add_mutually_exclusive_group()
    # With no file named, the target is ROOT/README.md (resolved in main, once ROOT is known).
    what.add_argument(
        "--write",
        type=Path,
        nargs="?",
        const=_ROOT_README,
        metavar="README",
        help="replace the table between the markers in README (default: ROOT/README.md)",
    )
    what.add_argument(
        "--check",
        type=Path,
        nargs="?",
        const=_ROOT_README,
        metavar="README",
        help="exit 1 when README's table is not this one (default: ROOT/README.md)",
    )
    return p


def _minutes(seconds: float | None) -> str:
    if not seconds:
        return "–"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s" if minutes else f"{sec} s"


def _row(folder: Path, root: Path, base: Path) -> list[str] | None:
    try:
        manifest: dict[str, Any] = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError, RecursionError):
        return None
    records = [r for r in iter_records(folder) if r["cell_id"] in set(manifest.get("cells", []))]
    status = Counter(r["status"] for r in records)
    commits = sorted({str(r["environment"].get("git_commit"))[:12] for r in records})
    devices = sorted({str(r["environment"].get("device_name") or r["environment"].get("device")) for r in records})
    rss = manifest.get("peak_rss_mb")
    # Relative to the page the table goes into (base), so the link works where that page is read.
    link = f"[`{folder.name}`]({Path(os.path.relpath(root / folder.name / 'leaderboard.md', base)).as_posix()})"
    return [
        link,
        f"`{manifest.get('command') or 'b2s-bench run'}`",
        f"{status.get('ok', 0)} ok"
        + (f", {status['error']} failed" if status.get("error") else "")
        + (
            f", {skipped} not applicable or short of target"
            if (skipped := sum(status.get(s, 0) for s in SKIPPED_STATUSES))
            else ""
        ),
        _minutes(manifest.get("wall_seconds")),
        f"{rss:,.0f} MB" if rss else "–",
        ", ".join(devices),
        ", ".join(commits),
        (manifest.get("description") or "").strip(),
    ]


def table(root: Path, base: Path = Path(".")) -> str:
    """The table of the runs under root, its links relative to the folder base."""
    if not root.is_dir():
        raise UserError(f"{root} does not exist; publish a run first (`b2s-bench publish RUN_DIR`)")
    rows = [
        r
        for r in (_row(f, root, base) for f in sorted(root.iterdir()) if f.is_dir() and not is_moved_aside(f.name))
        if r is not None
    ]
    head = ["folder", "command", "cells", "wall time", "peak RSS", "device", "commit", "what it is"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _spliced(readme: Path, body: str) -> tuple[str, str]:
    text = readme.read_text()
    if START not in text or END not in text:
        raise UserError(f"{readme} has no results table markers; put these two lines where the table goes:\n{START}\n{END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return text, f"{head}{START}\n{body}\n{END}{tail}"


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    for name in ("write", "check"):
        if getattr(args, name) == _ROOT_README:
            setattr(args, name, args.root / "README.md")
    target = args.write or args.check
    body = table(args.root, target.parent if target else Path("."))
    if args.write:
        _, new = _spliced(args.write, body)
        write_atomic(args.write, new)
        print(f"wrote the table of {body.count(chr(10)) - 1} runs into {args.write}")
        return 0
    if args.check:
        old, new = _spliced(args.check, body)
        if old != new:
            print(f"{args.check}'s results table is stale; run `b2s-bench results {args.root} --write {args.check}`")
            return 1
        print(f"{args.check}'s results table matches {args.root}")
        return 0
    print(body)
    return 0
