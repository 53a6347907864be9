"""``b2s-bench validate SUITE``: parse, resolve, expand and print the cells, without running.

Exits 2 when the suite is broken (an unknown model of a known source and a ``weights:`` file that is
not a checkpoint are too), and 3 when something a cell needs is missing here (a weights file, a
package, a dataset), with what to install or where to put it and the suite line it comes from.
"""

from __future__ import annotations

import argparse
import sys

from tabulate import tabulate

from ..errors import UserError
from ..plugins import Plugins
from . import exits


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "validate",
        help="check a suite and list its cells without running",
        description="Parse and check a suite, expand its grid, and print each cell with what it needs. "
        "Exit 2: the suite is broken (a name, a value, a file of the wrong kind); "
        "exit 3: something a cell needs is missing here.",
    )
    p.add_argument(
        "suite", nargs="?", default=None, help="a suite file, or the name of a shipped suite (default: the embedded suite)"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("-k", dest="pattern", default=None, metavar="PATTERN")
    return p


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    from ..execution.prepare import prepare_run  # torch loads only when a suite is read
    from ..execution.prerequisites import check_cells

    run = prepare_run(
        args.suite,
        plugins=plugins,
        plugin_options=getattr(args, "plugin_options", None) or {},
        device=args.device,
        pattern=args.pattern,
    )
    suite, device, cells = run.suite, run.device_type, list(run.cells)
    if args.pattern and not cells:  # as `run -k` says: an empty selection is a mistake, not a suite that is fine
        raise UserError(
            f"-k {args.pattern!r} matches none of the cells of suite {suite.name}; `b2s-bench validate` without -k lists them"
        )
    found = check_cells(suite, plugins, cells)
    if found.mistakes:  # the suite is broken, like a load_suite error: no table of cells that cannot be right
        raise found.error()
    missing = found.missing
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
            needs.append("GPU" + (" (recommended; will run on CPU)" if device == "cpu" else ""))
        status = "MISSING" if c.model.label in missing else "ready"
        rows.append([c.id, c.model.label, c.label, c.track, ", ".join(needs), status])
    print(f"suite {suite.name} ({suite.file}): {len(cells)} cells on {device}")
    print(tabulate(rows, headers=["cell", "model", "method", "track", "needs", "status"], tablefmt="github"))
    if not found.ok:
        print(f"\nmissing here ({len(found.blocked)} of {len(cells)} cells cannot run):", file=sys.stderr)
        for problem in found.problems:
            print(f"  {problem}", file=sys.stderr)
        return exits.MISSING
    return exits.OK
