"""Leaderboard reporters: markdown, CSV, JSON (:mod:`.writers`), the HTML page (:mod:`.page`), the
plots (:mod:`.plots`), published numbers beside ours (:mod:`.paper`) and the terminal summary. The
heavy modules load only when a report is written, so listing and resuming stay fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import b2s_bench as b2s
from b2s_bench import ReporterSpec
from b2s_bench.reporting import ReportContext


def _lazy(module: str, function: str) -> Callable[[ReportContext], list[Path]]:
    def write(ctx: ReportContext) -> list[Path]:
        return getattr(importlib.import_module(f"{__package__}.{module}"), function)(ctx)

    return write


def write_summary(ctx: ReportContext) -> list[Path]:
    """summary.txt: what ``b2s-bench run`` prints at the end (under 100 columns)."""
    path = ctx.out_dir / "summary.txt"
    b2s.write_atomic(path, ctx.summary() + "\n")
    return [path]


REPORTERS = [
    ReporterSpec("markdown", _lazy("writers", "write_markdown"), "leaderboard.md: tables per model, failed cells, theory checks"),
    ReporterSpec("csv", _lazy("writers", "write_csv"), "leaderboard.csv, failed.csv and records.csv (every raw field)"),
    ReporterSpec("json", _lazy("writers", "write_json"), "leaderboard.json"),
    ReporterSpec(
        "html",
        _lazy("page", "write_html"),
        "leaderboard.html: one self-contained page: sortable, filterable tables, plots, checks, verdicts",
    ),
    ReporterSpec(
        "pareto",
        _lazy("plots", "write_pareto"),
        "pareto.png (primary metric against stored size) and weights.png (weight error against bits "
        "per weight, with the Gaussian limit)",
    ),
    ReporterSpec(
        "masks",
        _lazy("masks", "write_masks"),
        "masks-MODEL.png: per segmentation model, one image, its truth, the dense mask and each method's "
        "(the HTML page embeds them)",
    ),
    ReporterSpec(
        "paper",
        _lazy("paper", "write_paper"),
        "paper.md and paper.json: published numbers (the Big2Small paper's tables, its baselines' papers) beside "
        "the matching cells, with intervals, drops from each side's fp32 and verdicts; the rest as not run",
    ),
    ReporterSpec(
        "summary", write_summary, "summary.txt: per model the top methods by the primary metric, with ratio and 95 % CI"
    ),
]


@b2s.hookimpl
def b2s_register_reporters(register: Callable[[b2s.ReporterSpec], None]) -> None:
    for spec in REPORTERS:
        register(spec)
