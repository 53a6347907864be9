"""Leaderboard writers: markdown (tabulate), CSV, JSON and a self-contained sortable HTML page.

All of them read the records' frame only (``b2s_bench.report``), so ``b2s-bench report`` rebuilds
them from a run folder at any time. Registered by :mod:`b2s_bench_plugins.reporters`, which imports
this module (and pandas) only when a report is written.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from b2s_bench import ReportContext, failures, leaderboards, theory_sections, write_atomic


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.2e}"
        if abs(value) >= 1000:
            return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def _md_table(table: pd.DataFrame) -> str:
    rows = [[_fmt(v) if not isinstance(v, str) else v for v in row] for row in table.itertuples(index=False)]
    return tabulate(rows, headers=list(table.columns), tablefmt="github", disable_numparse=True)


def _signed(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "–"
    return f"{v:+.2e}" if v != 0 and abs(v) < 0.01 else f"{v:+.2f}"


def _deltas_signed(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    for col in out.columns:
        if col.startswith("Δ "):
            out[col] = [_signed(v) for v in out[col]]
    return out


def write_markdown(ctx: ReportContext) -> list[Path]:
    parts = [f"# Leaderboard: {ctx.suite}", ""]
    ok = int((ctx.frame["status"] == "ok").sum()) if not ctx.frame.empty else 0
    parts.append(f"Rebuilt from {len(ctx.frame)} records ({ok} ok). Sizes count every stored bit against an fp32 "
                 "baseline of the whole inference state_dict; ratio = fp32 bits / stored bits. "
                 "Δ columns are differences from the dense model.")
    for title, table in leaderboards(ctx.frame, ctx.metrics, ctx.settings):
        parts += ["", f"## {title}", "", _md_table(_deltas_signed(table))]
    fails = failures(ctx.frame)
    if not fails.empty:
        parts += ["", "## Failed cells", "", _md_table(fails)]
    sections = theory_sections(ctx.frame, ctx.metrics, ctx.settings.get("primary"))
    if sections:
        parts += ["", "## Theory checks"]
        for title, table in sections:
            parts += ["", f"### {title}", "", _md_table(table)]
    path = ctx.out_dir / "leaderboard.md"
    write_atomic(path, "\n".join(parts) + "\n")
    return [path]


def _flat(ctx: ReportContext) -> pd.DataFrame:
    frame = ctx.frame.copy()
    return frame.sort_values(["model", "status", "track", "method", "cell_id"], kind="mergesort") if not frame.empty else frame


def write_csv(ctx: ReportContext) -> list[Path]:
    written = []
    tables = leaderboards(ctx.frame, ctx.metrics, ctx.settings)
    if tables:
        combined = pd.concat([t.assign(model=title) for title, t in tables], ignore_index=True)
        cols = ["model"] + [c for c in combined.columns if c != "model"]
        path = ctx.out_dir / "leaderboard.csv"
        write_atomic(path, combined[cols].to_csv(index=False))
        written.append(path)
    fails = failures(ctx.frame)
    path = ctx.out_dir / "failed.csv"
    write_atomic(path, fails.to_csv(index=False))
    written.append(path)
    path = ctx.out_dir / "records.csv"  # every raw field, exact bits included
    write_atomic(path, _flat(ctx).to_csv(index=False))
    written.append(path)
    return written


def _json_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for rec in table.to_dict("records"):
        rows.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()})
    return rows


def write_json(ctx: ReportContext) -> list[Path]:
    data = {
        "suite": ctx.suite,
        "metrics": [dataclasses.asdict(m) for m in ctx.metrics],
        "leaderboards": [{"title": t, "rows": _json_rows(tab)} for t, tab in leaderboards(ctx.frame, ctx.metrics, ctx.settings)],
        "failed": _json_rows(failures(ctx.frame)),
    }
    path = ctx.out_dir / "leaderboard.json"
    write_atomic(path, json.dumps(data, indent=1, ensure_ascii=False, default=str))
    return [path]


SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], idx = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.dataset.order !== 'asc'; th.dataset.order = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[idx].dataset.v, y = b.cells[idx].dataset.v, nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _html_table(table: pd.DataFrame) -> str:
    head = "".join(f"<th title='click to sort'>{html.escape(str(c))}</th>" for c in table.columns)
    body = []
    for row in table.itertuples(index=False):
        cells = []
        for v in row:
            raw = "" if isinstance(v, float) and math.isnan(v) else v
            cells.append(f"<td data-v='{html.escape(str(raw), quote=True)}'>{html.escape(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_html(ctx: ReportContext) -> list[Path]:
    parts = [f"<h1>Leaderboard: {html.escape(ctx.suite)}</h1>",
             "<p>Sizes count every stored bit against fp32; ratio = fp32 bits / stored bits. Click a header to sort.</p>"]
    for title, table in leaderboards(ctx.frame, ctx.metrics, ctx.settings):
        parts += [f"<h2>{html.escape(title)}</h2>", _html_table(table)]
    fails = failures(ctx.frame)
    if not fails.empty:
        parts += ["<h2>Failed cells</h2>", _html_table(fails)]
    for title, table in theory_sections(ctx.frame, ctx.metrics, ctx.settings.get("primary")):
        parts += [f"<h3>{html.escape(title)}</h3>", _html_table(table)]
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
             "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{cursor:pointer;background:#f3f3f3}"
             "td:first-child{text-align:left}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(ctx.suite)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}<script>{SORT_JS}</script></body></html>")
    path = ctx.out_dir / "leaderboard.html"
    write_atomic(path, page)
    return [path]
