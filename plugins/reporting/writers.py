"""Leaderboard writers: markdown (tabulate), CSV and JSON. The HTML page is :mod:`.html`.

All of them read the tables the report context builds from the records (``ctx.leaderboards()``,
``ctx.theory()``, ...), so ``b2s-bench report`` rebuilds them from a run folder at any time.
Registered by :mod:`b2s_bench_plugins.reporting.reporters`, which imports this module (and pandas)
only when a report is written.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from b2s_bench import write_atomic
from b2s_bench.reporting import NOT_APPLICABLE_TITLE, ReportContext, header

__all__ = ["fmt", "write_markdown", "write_csv", "write_json", "intro", "column_legend", "interval_decimals", "column_decimals"]


def interval_decimals(width: float) -> int:
    """The decimals an interval of ``width`` warrants: two significant digits of the width (72.2 for
    an interval 4.4 wide; 0.853 for one 0.044 wide), at most 6."""
    if not math.isfinite(width) or width <= 0:
        return 3
    return min(6, max(0, 1 - math.floor(math.log10(width))))


def column_decimals(table: pd.DataFrame, metrics: Any) -> dict[str, int]:
    """Per column, the decimals every value of it is shown with: a metric's value, ± std, Δ and
    interval columns take the decimals of its narrowest interval in the table (so one column never
    mixes 72.222 and 12.5, and no value claims more precision than the best-measured row has)."""
    out: dict[str, int] = {}
    for meta in metrics:
        ci = f"{meta.name} 95% CI"
        if ci not in table:
            continue
        widths = [
            float(v[1]) - float(v[0])
            for v in table[ci]
            if isinstance(v, tuple) and len(v) == 2 and math.isfinite(float(v[1]) - float(v[0])) and float(v[1]) > float(v[0])
        ]
        if not widths:
            continue
        places = interval_decimals(min(widths))
        for col in (header(meta), ci, f"± {meta.name}", f"Δ {meta.name}"):
            if col in table:
                out[col] = places
    return out


def fmt(value: Any, places: int | None = None) -> str:
    """A table cell as text: short floats, "–" for missing, ``[lo, hi]`` for an interval;
    ``places`` (from :func:`column_decimals`) fixes the decimals of a column's numbers."""
    if value is None:
        return "–"
    if isinstance(value, tuple) and len(value) == 2:
        return f"[{fmt(float(value[0]), places)}, {fmt(float(value[1]), places)}]"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if places is not None:
            return f"{value:.{places}f}"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.2e}"
        if abs(value) >= 1000:
            return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def _md_table(table: pd.DataFrame, places: dict[str, int] | None = None) -> str:
    cols = [(places or {}).get(str(c)) for c in table.columns]
    rows = [
        [fmt(v, p) if not isinstance(v, str) else v for v, p in zip(row, cols, strict=True)]
        for row in table.itertuples(index=False)
    ]
    return tabulate(rows, headers=list(table.columns), tablefmt="github", disable_numparse=True)


def _signed(v: Any, places: int | None = None) -> Any:
    if not isinstance(v, float):
        return v
    if math.isnan(v):
        return "–"
    if places is not None:
        return f"{v:+.{places}f}"
    return f"{v:+.2e}" if v != 0 and abs(v) < 0.01 else f"{v:+.2f}"


def _deltas_signed(table: pd.DataFrame, places: dict[str, int] | None = None) -> pd.DataFrame:
    out = table.copy()
    for col in out.columns:
        if col.startswith("Δ "):
            out[col] = [_signed(v, (places or {}).get(col)) for v in out[col]]
    return out


def intro(ctx: ReportContext) -> list[str]:
    """The paragraphs every leaderboard starts with: what was counted, and how the statistics work."""
    ok = int((ctx.frame["status"] == "ok").sum()) if not ctx.frame.empty else 0
    return [
        f"Rebuilt from {len(ctx.frame)} records ({ok} ok). Sizes count every stored bit against an fp32 "
        "baseline of the whole inference state_dict; ratio = fp32 bits / stored bits. "
        "Δ columns are differences from the dense model.",
        f"Statistics: {ctx.notes()['stats']}",
        *column_legend(ctx),
    ]


def column_legend(ctx: ReportContext) -> list[str]:
    """One paragraph: each metric column of the leaderboards by its header, with what it measures,
    so a column name has one stated definition (bits per weight of the whole model is not the
    theory table's bits per coded weight). Empty when no shown metric has a description."""
    shown = {str(c) for _, table in ctx.leaderboards() for c in table.columns}
    items = [f"{header(m)}: {m.description}" for m in ctx.metrics if m.description and header(m) in shown]
    return ["Columns. " + "; ".join(items) + "."] if items else []


def write_markdown(ctx: ReportContext) -> list[Path]:
    notes = ctx.notes()
    parts = [f"# Leaderboard: {ctx.suite}", ""]
    parts += "\n\n".join(intro(ctx)).splitlines()
    for title, table in ctx.leaderboards():
        places = column_decimals(table, ctx.metrics)
        parts += ["", f"## {title}", "", _md_table(_deltas_signed(table, places), places)]
        if "note" in table and table["note"].astype(bool).any():
            parts += ["", f"**{notes['below_limit']}**"]
    caveats = ctx.caveat_notes()
    if caveats:
        parts += ["", *[f"- {c}" for c in caveats]]
    point = ctx.operating_point_note()
    if point:
        parts += ["", point[0], "", *[f"- {line}" for line in point[1:]]]
    skipped = ctx.not_applicable()
    if not skipped.empty:
        parts += [
            "",
            f"## {NOT_APPLICABLE_TITLE}",
            "",
            "Kept out of the tables above, rankings, fronts and verdicts.",
            "",
            _md_table(skipped),
        ]
    fails = ctx.failures()
    if not fails.empty:
        parts += ["", "## Failed cells", "", _md_table(fails)]
    sections = ctx.theory()
    if sections:
        parts += ["", "## Theory checks"]
        for title, table in sections:
            parts += ["", f"### {title}", ""]
            if title in notes:
                parts += [notes[title], ""]
            parts.append(_md_table(_deltas_signed(table)))
    path = ctx.out_dir / "leaderboard.md"
    write_atomic(path, "\n".join(parts) + "\n")
    return [path]


def _split_intervals(table: pd.DataFrame) -> pd.DataFrame:
    """Interval columns (tuples) as two numeric columns, "X lo" and "X hi", for spreadsheets."""
    out = pd.DataFrame(index=table.index)
    for col in table.columns:
        values = list(table[col])
        if any(isinstance(v, tuple) for v in values):
            out[f"{col} lo"] = [v[0] if isinstance(v, tuple) else math.nan for v in values]
            out[f"{col} hi"] = [v[1] if isinstance(v, tuple) else math.nan for v in values]
        else:
            out[col] = values
    return out


def _flat(ctx: ReportContext) -> pd.DataFrame:
    """Every raw field of every record (per-example outcomes and preview pictures left out: they are in the records)."""
    frame = ctx.frame.drop(columns=["per_example", "clusters", "preview"], errors="ignore")
    if frame.empty:
        return frame
    return frame.sort_values(["model", "status", "track", "method", "cell_id"], kind="mergesort")


def write_csv(ctx: ReportContext) -> list[Path]:
    written = []
    tables = ctx.leaderboards()
    if tables:
        combined = pd.concat([_split_intervals(t).assign(model=title) for title, t in tables], ignore_index=True)
        cols = ["model"] + [c for c in combined.columns if c != "model"]
        path = ctx.out_dir / "leaderboard.csv"
        write_atomic(path, combined[cols].to_csv(index=False))
        written.append(path)
    path = ctx.out_dir / "failed.csv"
    write_atomic(path, ctx.failures().to_csv(index=False))
    written.append(path)
    skipped, path = ctx.not_applicable(), ctx.out_dir / "not_applicable.csv"
    if not skipped.empty:
        write_atomic(path, skipped.to_csv(index=False))
        written.append(path)
    else:  # one left by an earlier report would list cells that are now ok or gone
        path.unlink(missing_ok=True)
    path = ctx.out_dir / "records.csv"  # every raw field, exact bits included
    write_atomic(path, _flat(ctx).to_csv(index=False))
    written.append(path)
    return written


def _json_value(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, tuple):
        return [_json_value(x) for x in v]
    return v


def _json_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _json_value(v) for k, v in rec.items()} for rec in table.to_dict("records")]


def write_json(ctx: ReportContext) -> list[Path]:
    data = {
        "suite": ctx.suite,
        "statistics": ctx.notes()["stats"],
        "metrics": [dataclasses.asdict(m) for m in ctx.metrics],
        "leaderboards": [{"title": t, "rows": _json_rows(tab)} for t, tab in ctx.leaderboards()],
        "failed": _json_rows(ctx.failures()),
        "not_applicable": _json_rows(ctx.not_applicable()),
        "caveats": ctx.caveat_notes(),
        "theory": [{"title": t, "rows": _json_rows(tab)} for t, tab in ctx.theory()],
    }
    path = ctx.out_dir / "leaderboard.json"
    write_atomic(path, json.dumps(data, indent=1, ensure_ascii=False, default=str))
    return [path]
