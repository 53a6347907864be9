"""Leaderboard reporters: markdown, CSV, JSON, HTML (writers in :mod:`.report_writers`) and the
Pareto plot (:mod:`.plots`). The heavy modules load only when a report is written, so listing
and resuming stay fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import b2s_bench as b2s
from b2s_bench import ReportContext, ReporterSpec


def _lazy(module: str, function: str) -> Callable[[ReportContext], list[Path]]:
    def write(ctx: ReportContext) -> list[Path]:
        return getattr(importlib.import_module(f"{__package__}.{module}"), function)(ctx)

    return write


REPORTERS = [
    ReporterSpec("markdown", _lazy("writers", "write_markdown"),
                 "leaderboard.md: tables per model, failed cells, theory checks"),
    ReporterSpec("csv", _lazy("writers", "write_csv"), "leaderboard.csv, failed.csv and records.csv (every raw field)"),
    ReporterSpec("json", _lazy("writers", "write_json"), "leaderboard.json"),
    ReporterSpec("html", _lazy("writers", "write_html"), "leaderboard.html: a self-contained page with sortable tables"),
    ReporterSpec("pareto", _lazy("plots", "write_pareto"), "pareto.png: primary metric against stored bits, per model"),
]


@b2s.hookimpl
def b2s_register_reporters(register: Any) -> None:
    for spec in REPORTERS:
        register(spec)
