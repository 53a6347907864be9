"""``b2s-bench ls {compressors,models,datasets,tasks,metrics,reporters,executors,plugins,suites} [PATTERN] [-v]``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from tabulate import tabulate

from ..errors import UserError
from ..plugins import Plugins
from ..registry import matches
from ..suites.source import shipped_suites
from .answers import LS_KINDS
from .show import catalog_rows, compressor_track, settings_table

KINDS = ("compressors", "models", "datasets", "tasks", "metrics", "reporters", "executors", "plugins", "suites")
DESCRIPTION = 100  # characters of a suite's description shown without -v
MODELS_NOTE = (
    "offline: works without the internet (a package may need installing first); needs the hub: "
    "`pretrained: true` downloads the weights on first use, unless the local cache holds them "
    "(`b2s-bench validate` tells)"
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "ls",
        help="list compressors, models, datasets, tasks, metrics, reporters, executors, plugins or shipped suites",
        description="List what the installed plugins provide, or the suites shipped with b2s-bench. "
        "PATTERN is a substring or a glob. `b2s-bench show NAME` shows one in full.",
    )
    p.add_argument("kind", choices=KINDS)
    p.add_argument("pattern", nargs="?", default=None)
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also each setting's type, default, allowed values and help (compressors, datasets), "
        "metrics' roles and inputs, suites' whole descriptions",
    )
    return p


def _one_line(text: str, verbose: bool) -> str:
    text = " ".join(text.split())
    return text if verbose or len(text) <= DESCRIPTION else text[: DESCRIPTION - 1].rstrip() + "…"


def _rank(weights: str, availability: str) -> int:
    """Real weights that work offline first, then those a package install brings, the hub's, random init last."""
    if weights.startswith("none"):
        return 3
    if availability == "offline":
        return 0
    return 1 if availability.startswith("offline") else 2


def _models(plugins: Plugins, pattern: str | None) -> tuple[list[list[Any]], list[str]]:
    rows = []
    for source in plugins.models:
        try:
            entries = catalog_rows(source)
        except Exception as e:  # one broken source (a missing extra) must not hide the others
            rows.append([f"{source.name}:*", "-", f"cannot list: {type(e).__name__}: {e}", source.description])
            continue
        for name, weights, availability in entries:
            full = f"{source.name}:{name}"
            if matches(full, pattern) or (weights and matches(weights, pattern)):
                rows.append([full, weights or "-", availability or "-", source.description])
    rows.sort(key=lambda r: (_rank(r[1], r[2]), r[0]))
    return rows, ["model", "weights", "availability", "source"]


def _suites(plugins: Plugins, pattern: str | None, verbose: bool) -> tuple[list[list[Any]], list[str]]:
    from ..suites.load import load_suite  # it loads torch: only `ls suites` pays for that

    rows = []
    for name, path in shipped_suites().items():
        if not matches(name, pattern):
            continue
        shown = os.path.relpath(path) if not os.path.relpath(path).startswith("../..") else str(path)
        try:  # parsing is cheap: no model is built and no config of the grid
            suite = load_suite(str(path), plugins)
            rows.append([name, f"{suite.grid_size():,}", _one_line(suite.description, verbose), shown])
        except UserError as e:
            rows.append([name, "-", f"cannot load: {e}", shown])
    return rows, ["suite", "cells", "description", "file"]


def _details(kind: str, plugins: Plugins, pattern: str | None) -> list[str]:
    """The settings of each listed compressor or dataset (``-v``)."""
    registry = plugins.compressors if kind == "compressors" else plugins.datasets
    return [f"\n{spec.name}: {spec.description}\n{settings_table(spec.config)}" for spec in registry.match(pattern)]


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    kind, pattern, verbose = args.kind, args.pattern, getattr(args, "verbose", False)
    args.answer_kept = kind in LS_KINDS  # the answer depends on the plugins alone (cli/answers.py)
    notes: list[str] = []
    if kind == "compressors":
        rows = [
            [s.name, s.family, compressor_track(s), s.version, plugins.compressors.origin(s.name), s.description]
            for s in plugins.compressors.match(pattern)
        ]
        headers = ["name", "family", "data track", "version", "plugin", "description"]
    elif kind == "models":
        rows, headers = _models(plugins, pattern)
        notes = [MODELS_NOTE]
    elif kind == "datasets":
        rows = []
        for s in plugins.datasets.match(pattern):
            problems = s.problems(s.config()) if s.problems else []
            rows.append(
                [
                    s.name,
                    s.task,
                    "yes" if s.labeled else "no",
                    s.label_space or "-",
                    "yes" if not problems else "no: " + problems[0],
                    s.description,
                ]
            )
        headers = ["name", "task", "labeled", "labels", "available here", "description"]
    elif kind == "tasks":
        rows = []
        for t in plugins.tasks.match(pattern):
            datasets = [d.name for d in plugins.datasets if d.task == t.name]
            metrics = [m.name for m in plugins.metrics if m.tasks is not None and t.name in m.tasks]
            rows.append(
                [t.name, ", ".join(datasets) or "-", ", ".join(metrics) or "-", plugins.tasks.origin(t.name), t.description]
            )
        headers = ["name", "datasets", "its own metrics", "plugin", "description"]
        notes = ["size, weight and time metrics serve every task; a suite's metrics must serve its datasets' tasks"]
    elif kind == "metrics":
        rows = [
            [
                m.name,
                m.unit or "-",
                "↑" if m.higher_is_better else "↓",
                m.kind,
                ", ".join(sorted(m.tasks or ())) or "any",
                m.description,
            ]
            + ([", ".join(sorted(m.roles)) or "-", ", ".join(sorted(m.needs)) or "-", m.version] if verbose else [])
            for m in plugins.metrics.match(pattern)
        ]
        headers = ["name", "unit", "better", "kind", "tasks", "description"] + (["roles", "reads", "version"] if verbose else [])
    elif kind == "reporters":
        rows = [[r.name, r.description] for r in plugins.reporters.match(pattern)]
        headers = ["name", "description"]
    elif kind == "executors":
        ranked = sorted(plugins.executors.match(pattern), key=lambda e: (e.rank, e.name))
        default = min(plugins.executors, key=lambda e: (e.rank, e.name)).name if len(plugins.executors) else None
        rows = [
            [
                e.name + (" (default)" if e.name == default else ""),
                "yes" if e.detaches else "no",
                plugins.executors.origin(e.name),
                e.description,
            ]
            for e in ranked
        ]
        headers = ["name", "--detach", "plugin", "description"]
        notes = ["`b2s-bench run SUITE --executor NAME` (or $B2S_BENCH_EXECUTOR) picks one"]
    elif kind == "suites":
        rows, headers = _suites(plugins, pattern, verbose)
        notes = ["`b2s-bench run NAME` runs one; `b2s-bench validate NAME` lists its cells"]
    else:
        rows = [[i.name, i.distribution, i.version, "ok", i.origin] for i in plugins.infos if matches(i.name, pattern)]
        rows += [
            [f.name, f.distribution, f.version, "FAILED: " + f.error, ""] for f in plugins.failures if matches(f.name, pattern)
        ]
        rows += [[d, "", "", "disabled", ""] for d in plugins.disabled if matches(d, pattern)]
        rows.sort(key=lambda r: r[0])
        headers = ["plugin", "distribution", "version", "status", "origin"]
    if not rows:
        print(f"no {kind} match {pattern!r}")
        return 0
    print(tabulate(rows, headers=headers, tablefmt="github"))
    if verbose and kind in ("compressors", "datasets"):
        print("\n".join(_details(kind, plugins, pattern)))
    for note in notes:
        print(f"\n{note}")
    return 0
