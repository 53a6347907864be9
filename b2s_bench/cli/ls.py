"""``b2s-bench ls {compressors,models,datasets,metrics,plugins} [PATTERN]``."""

from __future__ import annotations

import argparse
import fnmatch
from typing import Any

from tabulate import tabulate

from ..plugins import Plugins

KINDS = ("compressors", "models", "datasets", "metrics", "reporters", "plugins")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("ls", help="list registered compressors, models, datasets, metrics or plugins",
                       description="List what the installed plugins provide. PATTERN is a substring or a glob.")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("pattern", nargs="?", default=None)
    return p


def _match(name: str, pattern: str | None) -> bool:
    if not pattern:
        return True
    pat = pattern if any(ch in pattern for ch in "*?[") else f"*{pattern}*"
    return fnmatch.fnmatchcase(name.lower(), pat.lower())


def _track(spec: Any) -> str:
    if isinstance(spec.track, str):
        return spec.track
    try:
        return f"{spec.track_for(spec.config())} (default; by setting)"
    except Exception:
        return "by setting"


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    kind, pattern = args.kind, args.pattern
    if kind == "compressors":
        rows = [[s.name, s.family, _track(s), s.version, plugins.compressors.origin(s.name), s.description]
                for s in plugins.compressors.match(pattern)]
        headers = ["name", "family", "data track", "version", "plugin", "description"]
    elif kind == "models":
        rows = []
        for source in plugins.models:
            for name in source.list_models(None):
                full = f"{source.name}:{name}"
                if _match(full, pattern):
                    rows.append([full, source.description])
        headers = ["model", "source"]
    elif kind == "datasets":
        rows = []
        for s in plugins.datasets.match(pattern):
            problems = s.problems(s.config()) if s.problems else []
            rows.append([s.name, "yes" if s.labeled else "no", s.label_space or "-",
                         "yes" if not problems else "no: " + problems[0], s.description])
        headers = ["name", "labeled", "labels", "available here", "description"]
    elif kind == "metrics":
        rows = [[m.name, m.unit or "-", "↑" if m.higher_is_better else "↓", m.kind, m.description]
                for m in plugins.metrics.match(pattern)]
        headers = ["name", "unit", "better", "kind", "description"]
    elif kind == "reporters":
        rows = [[r.name, r.description] for r in plugins.reporters.match(pattern)]
        headers = ["name", "description"]
    else:
        rows = [[i.name, i.distribution, i.version, "ok", i.origin] for i in plugins.infos if _match(i.name, pattern)]
        rows += [[f.name, f.distribution, f.version, "FAILED: " + f.error, ""] for f in plugins.failures
                 if _match(f.name, pattern)]
        rows += [[d, "", "", "disabled", ""] for d in plugins.disabled if _match(d, pattern)]
        rows.sort(key=lambda r: r[0])
        headers = ["plugin", "distribution", "version", "status", "origin"]
    print(tabulate(rows, headers=headers, tablefmt="github") if rows else f"no {kind} match {pattern!r}")
    return 0
