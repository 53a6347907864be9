"""``b2s-bench validate SUITE``: parse, resolve, expand and print the cells, without running.

Exits 2 when the suite is broken or something a cell needs is missing here (a weights file, a
package, a dataset), with what to install or where to put it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from tabulate import tabulate

from ..cells import expand, select
from ..plugins import Plugins
from ..runner import resolve_device
from ..suite import load_suite


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("validate", help="check a suite and list its cells without running",
                       description="Parse and check a suite, expand its grid, and print each cell with what it needs.")
    p.add_argument("suite", nargs="?", default=None, help="a suite file (default: the embedded suite)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("-k", dest="pattern", default=None, metavar="PATTERN")
    return p


def problems_of(suite, plugins: Plugins) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """Model and dataset problems found without building anything, by model label."""
    found: dict[str, list[str]] = {}
    def ask(check: Callable[[Any], list[str]], what: Any, owner: str) -> list[str]:
        try:
            return list(check(what))
        except Exception as e:  # a plugin's check that raises is itself a problem, not the end of validate
            return [f"{owner}'s check failed: {type(e).__name__}: {e}"]

    for model in suite.models:
        issues = []
        source = plugins.models.get(model.request.source)
        if source.problems:
            issues += ask(source.problems, model.request, f"model source {model.request.source!r}")
        dataset = model.dataset or suite.dataset
        if dataset is not None:
            spec = plugins.datasets.get(dataset.name)
            if spec.problems:
                issues += ask(spec.problems, dataset.config, f"dataset {dataset.name!r}")
        if issues:
            found[model.label] = issues
    return found


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    suite = load_suite(args.suite, plugins)
    device = resolve_device(args.device if args.device != "auto" else suite.device)
    cells = select(expand(suite, plugins, device.type), args.pattern)
    problems = problems_of(suite, plugins)
    rows = []
    for c in cells:
        needs = []
        if c.dataset is not None:
            needs.append(f"data:{c.dataset.name}")
        if c.track in ("calibration", "training"):
            needs.append(f"{c.track} split")
        if c.model.request.weights:
            needs.append(f"weights:{c.model.request.weights}")
        elif c.model.request.pretrained:
            needs.append("weights:hub (internet or cache)")
        if any(plugins.compressors.get(s.name).uses_gpu for s in c.stages):
            needs.append("GPU" + (" (recommended; will run on CPU)" if device.type == "cpu" else ""))
        status = "MISSING" if c.model.label in problems else "ready"
        rows.append([c.id, c.model.label, c.label, c.track, ", ".join(needs), status])
    print(f"suite {suite.name} ({suite.file}): {len(cells)} cells on {device.type}")
    print(tabulate(rows, headers=["cell", "model", "method", "track", "needs", "status"], tablefmt="github"))
    if problems:
        print("\nmissing here:", file=sys.stderr)
        for label, issues in problems.items():
            for issue in issues:
                print(f"  {label}: {issue}", file=sys.stderr)
        return 2
    return 0
