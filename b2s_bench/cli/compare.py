"""``b2s-bench compare BASE_DIR NEW_DIR``: a regression gate between two run folders.

Matches methods by model, dataset and label (seeds pooled), names each model whose weights differ
between the runs (its rows stay out of the gate unless --gate-model-changes), prints each significant
change with its 95 % interval, writes ``comparison.md`` and ``comparison.json`` (into ``--out``, default NEW_DIR),
and exits 1 when a ``--fail-on`` rule fails (see :mod:`b2s_bench.reporting.compare` for the statistics).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..plugins import Plugins
from . import exits


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compare",
        help="compare two run folders and fail on significant regressions",
        description="Compare two run folders method by method (model, dataset, label; seeds pooled): each "
        "metric's change new − base with a 95 % interval (paired over the same examples where "
        "possible). Writes comparison.md and comparison.json.",
        epilog="Rules: METRIC<DELTA fails when the change is significantly below DELTA (the upper end of its "
        "95 % interval is below it), METRIC>DELTA when significantly above. DELTA is in the metric's "
        "recorded unit (points for a metric in %, x for the ratio): 'ratio<-0.1' fails a significant drop "
        "of the ratio by more than 0.1x. "
        "With rules, a method ok in the base run whose cells in the new run failed (error, not-applicable, "
        "short-of-target) fails the gate too. "
        "Exit codes: 0 no rule failed, 1 a rule failed, 2 usage errors.",
    )
    p.add_argument("base_dir", type=Path, help="the reference run folder")
    p.add_argument("new_dir", type=Path, help="the run folder to check")
    p.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="RULE",
        dest="fail_on",
        help="METRIC<DELTA or METRIC>DELTA (repeatable; quote it in the shell)",
    )
    p.add_argument("--out", type=Path, default=None, help="where to write comparison.md and comparison.json (default: NEW_DIR)")
    p.add_argument("--all-records", action="store_true", help="include records of cells that are no longer in either suite")
    p.add_argument(
        "--gate-model-changes",
        action="store_true",
        help="apply the rules also to models whose weights differ between the runs (by default they are "
        "named and kept out of the gate: their changes may be the model's, not the method's)",
    )
    return p


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    from ..reporting.compare import compare_runs, parse_rule, terminal_text, write_comparison  # pandas loads here

    rules = [parse_rule(text) for text in args.fail_on]
    cmp = compare_runs(args.base_dir, args.new_dir, rules, args.all_records, args.gate_model_changes)
    files = write_comparison(cmp, args.out or args.new_dir)
    print(terminal_text(cmp))
    for f in files:
        print(f)
    # 1: a rule failed, or a method ok in the base run is not in the new one (the same code as a failed cell in `run`)
    return 1 if not cmp.passed else exits.OK
