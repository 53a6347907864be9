"""``b2s-bench publish RUN_DIR [--to DIR]``: a folder to commit or share, under ``results/``.

It holds the run's records (``cells/*.json``, only the cells of the suite as last run), the tables
rebuilt from them, and a README that says which command, code and machines made them. Artifacts
(safetensors, often hundreds of MB) stay behind. ``publish`` is the only command that writes
``results/``, and it never deletes anything: a destination that holds files is refused unless
``--merge`` (add these records, keep the others) or ``--replace`` (the old folder is moved aside,
next to it) is given. A run whose records do not all come from one clean commit, or that is
unfinished, is refused unless asked for, so a published figure is always traceable to code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..plugins import Plugins
from ..records import cell_path, write_atomic
from ..site import write_site_index
from ..store import RunStore
from .report import write_report


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("publish", help="copy a run's records and rebuilt tables into results/",
                       description="Copy a run's records (not its artifacts) to DIR, rebuild every table "
                                   "there from them, and write a README saying what made them.")
    p.add_argument("run_dir", type=Path, help="a run folder (runs/<suite> or --out of `run`)")
    p.add_argument("--to", type=Path, default=None, help="destination (default: results/<suite>)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--merge", action="store_true", help="the destination has records: add these, keep the others")
    how.add_argument("--replace", action="store_true",
                     help="the destination has records: move it aside (DIR.replaced-TIME) and publish anew")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="publish although some cells of the suite have no record yet")
    p.add_argument("--allow-dirty", action="store_true",
                   help="publish records made by uncommitted code or by several commits (the README says so)")
    return p


def _values(records: Sequence[Mapping[str, Any]], *keys: str) -> str:
    seen: Counter[str] = Counter()
    for rec in records:
        value: Any = rec
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        seen[str(value)] += 1
    return ", ".join(f"{v} ({n})" if len(seen) > 1 else v for v, n in seen.most_common())


def readme(manifest: dict[str, Any], records: Sequence[Mapping[str, Any]], missing: int) -> str:
    status = Counter(r.get("status") for r in records)
    started = min((r.get("started_at") or "" for r in records), default="")
    finished = max((r.get("finished_at") or "" for r in records), default="")
    seconds = sum(float((r.get("timings") or {}).get("total") or 0.0) for r in records)
    wall = manifest.get("wall_seconds")
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
        f"- Computed between {started} and {finished} (UTC); {seconds:,.0f} s of cell time in all"
        + (f"; the last run took {wall:,.0f} s wall, peak RSS {manifest.get('peak_rss_mb')} MB" if wall else ""),
        f"- Devices: {_values(records, 'environment', 'device_name')}",
        f"- torch {_values(records, 'environment', 'torch')}; b2s-bench {_values(records, 'environment', 'b2s_bench')}",
        f"- Code (git commit): {_values(records, 'environment', 'git_commit')}",
        "",
        "`leaderboard.md` is the table to read (also `.csv`, `.html`, `.json`, and the plots); "
        "`records.csv` has every raw field and `failed.csv` the failures. All of them are rebuilt from "
        "`cells/*.json` by `b2s-bench report` on this folder.",
        "",
    ]
    return "\n".join(lines)


def _commit_problems(records: Sequence[Mapping[str, Any]]) -> list[str]:
    commits = Counter(str((r.get("environment") or {}).get("git_commit")) for r in records)
    problems = []
    dirty = [c for c in commits if c.endswith("-dirty") or c == "None"]
    if dirty:
        problems.append(f"{sum(commits[c] for c in dirty)} records come from uncommitted code or outside git "
                        f"({', '.join(sorted(dirty))})")
    if len(commits) > 1:
        problems.append(f"the records come from {len(commits)} commits ({', '.join(sorted(commits))})")
    return problems


def _prepare_destination(dest: Path, run_dir: Path, args: argparse.Namespace) -> None:
    if dest.resolve() == run_dir.resolve():
        raise UserError(f"{dest} is the run folder itself; publish to another folder (--to)")
    if not dest.exists() or not any(dest.iterdir()):
        return
    if args.merge:
        return
    if args.replace:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        aside = dest.with_name(f"{dest.name}.replaced-{stamp}")
        os.replace(dest, aside)
        print(f"moved the previous {dest} to {aside}")
        return
    held = len(list((dest / "cells").glob("*.json"))) if (dest / "cells").is_dir() else 0
    raise UserError(f"{dest} already holds a published run ({held} records); nothing was changed. Pass --merge to add "
                    "these records and keep the others, or --replace to move it aside and publish anew")


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    run_dir: Path = args.run_dir
    store = RunStore(run_dir, warn=print)
    manifest = store.manifest()
    if manifest is None:
        raise UserError(f"{run_dir} is not a run folder (no run.json inside); run a suite first")
    ids: list[str] = list(manifest.get("cells", []))
    records = {cid: store.record(cid) for cid in ids}
    found = [r for r in records.values() if r is not None]
    missing = [cid for cid, rec in records.items() if rec is None]
    if missing and not args.allow_incomplete:
        raise UserError(f"{len(missing)} of {len(ids)} cells of {run_dir} have no record yet (e.g. {missing[0]}); "
                        f"finish the run (`b2s-bench run` on the same suite resumes) or pass --allow-incomplete")
    problems = _commit_problems(found)
    if problems and not args.allow_dirty:
        raise UserError("published figures must come from one clean commit, but " + "; ".join(problems) +
                        ". Commit, rerun with --force, and publish again (or pass --allow-dirty)")
    dest: Path = args.to or Path("results") / manifest["suite"]
    _prepare_destination(dest, run_dir, args)
    (dest / "cells").mkdir(parents=True, exist_ok=True)
    for cid, rec in records.items():
        if rec is not None:
            write_atomic(cell_path(dest, cid), cell_path(run_dir, cid).read_text())
    old = RunStore(dest).manifest() if args.merge else None
    if old is not None:  # merged: the tables show the cells of both
        manifest = {**manifest, "cells": list(dict.fromkeys([*old.get("cells", []), *ids]))}
    write_atomic(dest / "run.json", json.dumps(manifest, indent=1))
    written = write_report(dest, plugins)
    all_records = [r for r in (RunStore(dest).record(c) for c in manifest["cells"]) if r is not None]
    write_atomic(dest / "README.md", readme(manifest, all_records, len(manifest["cells"]) - len(all_records)))
    index = write_site_index(dest.parent)  # the static site over every published run
    for path in [*written, dest / "README.md", index]:
        print(path)
    return 0
