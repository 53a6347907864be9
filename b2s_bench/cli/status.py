"""``b2s-bench status DIR``: a run's cells, done, running (with host and age), failed (with why) and
pending, whatever executor runs them: it reads the folder's records and claims only.

A claim is "running" only while its owner may be: a claim whose process is gone (this host) or whose
heartbeat stopped past the default claim timeout (another host) is what a killed run left, and its cell
is pending, said "interrupted" (the same run command takes it over)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..plugins import Plugins
from ..store.folder import DEFAULT_CLAIM_TIMEOUT, RunStore
from ..store.records import DONE_STATUSES, load_json, record_problems


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "status",
        help="show a run folder's cells: done, running, failed, pending",
        description="Show the state of every cell of a run folder (any executor, any machine).",
    )
    p.add_argument("run_dir", type=Path, help="a run folder (runs/<suite> or --out of `run`)")
    p.add_argument("--all", action="store_true", help="list done and pending cells too, not only running and failed")
    return p


def _age(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _interrupted(info: dict[str, Any]) -> str | None:
    """Why a claim's owner is no longer computing its cell (a killed run), or None while it may be."""
    owner = f"{info.get('host')} pid {info.get('pid')}"
    alive = RunStore.owner_alive(info)
    if alive is False:
        return f"{owner} is gone; the same run command resumes it"
    if alive is None and info["age"] > DEFAULT_CLAIM_TIMEOUT:
        return f"{owner}, no heartbeat for {_age(info['age'])}; the same run command resumes it"
    return None


def cell_states(out: Path) -> tuple[dict[str, str], list[list[str]]]:
    """(cell id -> state, one row per cell: id, state, model and method, detail)."""
    store = RunStore(out)
    manifest = store.require_manifest()
    claims = store.active_claims()
    given = manifest.get("names")
    names: dict[str, Any] = given if isinstance(given, dict) else {}
    states, rows = {}, []
    for cid in manifest.get("cells", []):
        data, why = load_json(out / "cells" / f"{cid}.json")
        valid = why is None and not record_problems(data, cid)
        if valid and data["status"] in DONE_STATUSES:  # not-applicable / short-of-target: done, with why
            state, name = "done", f"{data['model'].get('label')} {data['label']}"
            detail = "" if data["status"] == "ok" else f"{data['status']}: {data['details'].get('status_reason', '')}"
        elif cid in claims and _interrupted(claims[cid]) is None:
            info = claims[cid]
            state, name = "running", str(names.get(cid, ""))
            detail = f"{info.get('host')} pid {info.get('pid')}, started {info.get('started')}, heartbeat {_age(info['age'])} ago"
        elif cid in claims and not valid:
            state, name, detail = "pending", str(names.get(cid, "")), f"interrupted: {_interrupted(claims[cid])}"
        elif valid:
            error = data.get("error") or {}
            state, name = "failed", f"{data['model'].get('label')} {data['label']}"
            detail = f"{error.get('type')}: {(error.get('message') or '').splitlines()[0] if error.get('message') else ''}"
        else:
            state, name = "pending", str(names.get(cid, ""))
            detail = "" if why == "no such file" else f"invalid record: {why or 'see validate'}"
        states[cid] = state
        rows.append([cid, state, name, detail[:100]])
    return states, rows


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    states, rows = cell_states(args.run_dir)
    counts = {s: sum(1 for v in states.values() if v == s) for s in ("done", "running", "failed", "pending")}
    manifest = RunStore(args.run_dir).manifest() or {}
    print(
        f"{manifest.get('suite', args.run_dir.name)} ({args.run_dir}): {len(states)} cells: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
    )
    shown = rows if args.all else [r for r in rows if r[1] in ("running", "failed") or r[3].startswith("interrupted")]
    if shown:
        print(tabulate(shown, headers=["cell", "state", "model / method", "detail"], tablefmt="github"))
    return 0
