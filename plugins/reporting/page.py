"""The HTML leaderboard: one self-contained page (inline CSS and script, plots as base64 PNG).

What it does for a reader: every table sorts by a click on its header (numbers as numbers, blanks
last); headers stay in view (sticky) while a table scrolls; a text box filters the rows of every
leaderboard; a "Columns" menu hides and shows columns. The page fits a 1,400-pixel window without
a horizontal page scroll: long method names wrap, and a table wider than the window scrolls inside
its own box. A result below the Gaussian rate-distortion limit is flagged in red with a note.
tests/plugins/reporting/test_html.py checks all of that in headless Chromium.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from b2s_bench import write_atomic
from b2s_bench.reporting import NOT_APPLICABLE_TITLE, ReportContext

from .masks import mask_grids
from .paper import html_section
from .plots import figures
from .writers import column_decimals, fmt, intro

__all__ = ["write_html", "render_page"]

STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:1em 1.5em;max-width:1680px;
 color:#1d1d1d;line-height:1.4}
h1{font-size:1.6em;margin:.2em 0 .4em}h2{font-size:1.25em;margin:1.4em 0 .4em}h3{font-size:1.05em;margin:1.2em 0 .3em}
p{max-width:110ch;overflow-wrap:anywhere}
.controls{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start;margin:1em 0;padding:.6em .8em;
 background:#f6f7f9;border:1px solid #e1e4e8;border-radius:6px}
.controls input[type=search]{width:22em;max-width:100%;padding:3px 6px}
.controls details{max-width:100%}
#columns{display:flex;flex-wrap:wrap;gap:.2em 1em;margin-top:.4em;font-size:13px}
.figures{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0;flex:1 1 680px;max-width:1100px}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:13px;color:#555}
.wrap{overflow:auto;max-width:100%;max-height:80vh;border:1px solid #d8dbe0;margin:0 0 1.2em}
table{border-collapse:separate;border-spacing:0;font-size:13px}
th,td{border-bottom:1px solid #e6e8eb;border-right:1px solid #eef0f2;padding:3px 7px;vertical-align:top}
th{position:sticky;top:0;z-index:1;background:#eef1f5;cursor:pointer;text-align:center;font-weight:600;min-width:4.5em}
th[aria-sort=ascending]::after{content:" ▲"}th[aria-sort=descending]::after{content:" ▼"}
td.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
td.t{text-align:left;overflow-wrap:anywhere;min-width:9em;max-width:28em}
td:first-child{min-width:18em}
.warn{color:#b00020;font-weight:600}
p.note{background:#fff5f5;border-left:3px solid #b00020;padding:.3em .6em}
p.note.info{background:#f6f8fa;border-left-color:#8a99ad}
div.note.info{background:#f6f8fa;border-left:3px solid #8a99ad;padding:.3em .6em;max-width:75em}
div.note p,div.note ul{margin:.3em 0}
"""

SCRIPT = """
'use strict';
(function () {
  function key(cell) { var v = cell.getAttribute('data-v'); return v === null ? cell.textContent : v; }
  function compare(x, y) {
    if (x === '' || y === '') { return x === y ? 0 : (x === '' ? 1 : -1); }
    var nx = Number(x), ny = Number(y);
    return (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, idx) {
      th.addEventListener('click', function () {
        var asc = th.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[idx]), y = key(b.cells[idx]);
          if (x === '' || y === '') { return compare(x, y); }
          return asc ? compare(x, y) : -compare(x, y);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  var filter = document.getElementById('filter');
  if (filter) {
    filter.addEventListener('input', function () {
      var q = filter.value.trim().toLowerCase();
      document.querySelectorAll('table.lb tbody tr').forEach(function (tr) {
        tr.hidden = q !== '' && tr.textContent.toLowerCase().indexOf(q) < 0;
      });
    });
  }
  var box = document.getElementById('columns'), names = [];
  document.querySelectorAll('table.lb thead th').forEach(function (th) {
    if (names.indexOf(th.dataset.col) < 0) { names.push(th.dataset.col); }
  });
  function toggle(name, show) {
    document.querySelectorAll('table.lb').forEach(function (table) {
      var idx = -1;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) { if (th.dataset.col === name) { idx = i; } });
      if (idx < 0) { return; }
      Array.prototype.forEach.call(table.rows, function (row) { row.cells[idx].hidden = !show; });
    });
  }
  names.forEach(function (name) {
    var label = document.createElement('label'), input = document.createElement('input');
    input.type = 'checkbox';
    input.checked = true;
    input.dataset.col = name;
    input.addEventListener('change', function () { toggle(name, input.checked); });
    label.appendChild(input);
    label.appendChild(document.createTextNode(' ' + name));
    if (box) { box.appendChild(label); }
  });
})();
"""


def _sort_value(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, tuple):
        return _sort_value(float(v[0]))
    if isinstance(v, float) and math.isinf(v):
        return "1e308" if v > 0 else "-1e308"
    return str(v)


def _cell(v: Any, places: int | None = None) -> str:
    text = fmt(v, places)
    numeric = isinstance(v, (int, float, tuple)) and not isinstance(v, bool) or v is None
    cls = "n" if numeric else "t"
    if "⚠" in text:
        cls += " warn"
    return f"<td class='{cls}' data-v='{html.escape(_sort_value(v), quote=True)}'>{html.escape(text)}</td>"


def _table(table: pd.DataFrame, leaderboard: bool = False, places: dict[str, int] | None = None) -> str:
    head = "".join(
        f"<th data-col='{html.escape(str(c), quote=True)}' title='click to sort'>{html.escape(str(c))}</th>"
        for c in table.columns
    )
    cols = [(places or {}).get(str(c)) for c in table.columns]
    body = "".join(
        "<tr>" + "".join(_cell(v, p) for v, p in zip(row, cols, strict=True)) + "</tr>" for row in table.itertuples(index=False)
    )
    cls = "sortable lb" if leaderboard else "sortable"
    return f"<div class='wrap'><table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _figures(ctx: ReportContext) -> str:
    captions = {
        "pareto.png": "Primary metric against stored size (log scale), 95 % CI bars; the front is labelled, "
        "the dashed line is the dense model. Hollow markers are rows marked † (a fit stopped on its budget): "
        "never on the front; one beyond the axis is an arrow at the edge with its value.",
        "weights.png": "Weight error against stored bits per weight of the compressed layers; the red line "
        "is the i.i.d. Gaussian limit σ²/E·2^(−2R); red rings mark results below their own "
        "recorded bound (the bits shared out over the tensors, which can sit below the line).",
        "convergence.png": "Convergence of each fit: weight PSNR on a fixed sample of entries against the "
        "fitting step, as the records keep it (details.curve); the fit seeds of one setting share a colour.",
    }
    parts = []
    for name, data in figures(ctx).items():
        src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        parts.append(
            f"<figure><img src='{src}' alt='{name}'><figcaption>{html.escape(captions.get(name, name))}</figcaption></figure>"
        )
    return f"<section class='figures'>{''.join(parts)}</section>" if parts else ""


#: under each mask grid, after its title
MASKS_CAPTION = (
    "The input, its ground truth, the dense model's mask and each method's (first seed), largest stored size "
    "first; red: where a method's mask differs from the dense model's (binary masks: foreground lost; blue: foreground added)."
)


def _masks(ctx: ReportContext) -> str:
    """The segmentation mask grids (:mod:`.masks`), one figure per model; "" when no record keeps a preview."""
    parts = []
    for title, data in mask_grids(ctx):
        src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        parts.append(
            f"<figure><img src='{src}' alt='masks: {html.escape(title, quote=True)}'>"
            f"<figcaption>{html.escape(title)}. {html.escape(MASKS_CAPTION)}</figcaption></figure>"
        )
    return f"<h2>Masks</h2><section class='figures masks'>{''.join(parts)}</section>" if parts else ""


def _description(folder: Path) -> str:
    """The suite's description as the run's ``run.json`` keeps it ("" when there is none)."""
    try:
        value = json.loads((folder / "run.json").read_text()).get("description")
    except (OSError, ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def render_page(ctx: ReportContext) -> str:
    """The whole page as text."""
    notes = ctx.notes()
    parts = [f"<h1>Leaderboard: {html.escape(ctx.suite)}</h1>"]
    about = _description(ctx.out_dir)
    if about:  # the whole description; the site index shows its first sentence
        parts.append(f"<p class='lead'>{html.escape(about)}</p>")
    parts += [f"<p>{html.escape(p)}</p>" for p in intro(ctx)]
    parts.append(
        "<div class='controls'><label>Filter rows <input id='filter' type='search' "
        "placeholder='method, family, track…'></label><details><summary>Columns</summary>"
        "<div id='columns'></div></details><span>Click a header to sort.</span></div>"
    )
    parts.append(_figures(ctx))
    parts.append(_masks(ctx))
    for title, table in ctx.leaderboards():
        parts += [f"<h2>{html.escape(title)}</h2>", _table(table, leaderboard=True, places=column_decimals(table, ctx.metrics))]
        if "note" in table and table["note"].astype(bool).any():
            parts.append(f"<p class='note warn'>{html.escape(notes['below_limit'])}</p>")
    caveats = ctx.caveat_notes()
    if caveats:
        parts.append("<ul class='note'>" + "".join(f"<li>{html.escape(c)}</li>" for c in caveats) + "</ul>")
    point = ctx.operating_point_note()
    if point:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in point[1:])
        parts.append(f"<div class='note info'><p>{html.escape(point[0])}</p><ul>{items}</ul></div>")
    skipped = ctx.not_applicable()
    if not skipped.empty:
        parts += [
            f"<h2>{html.escape(NOT_APPLICABLE_TITLE)}</h2>",
            "<p class='note info'>Kept out of the tables above, rankings, fronts and verdicts.</p>",
            _table(skipped),
        ]
    parts.append(html_section(ctx, _table))  # the published numbers, where the suite selects the paper format
    fails = ctx.failures()
    if not fails.empty:
        parts += ["<h2>Failed cells</h2>", _table(fails)]
    sections = ctx.theory()
    if sections:
        parts.append("<h2>Theory checks</h2>")
    for title, table in sections:
        parts.append(f"<h3>{html.escape(title)}</h3>")
        if title in notes:
            warn = "⚠" in notes[title]
            parts.append(f"<p class='note{'' if warn else ' info'}'>{html.escape(notes[title])}</p>")
        parts.append(_table(table))
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(ctx.suite)}</title><style>{STYLE}</style></head><body>{''.join(parts)}"
        f"<script>{SCRIPT}</script></body></html>"
    )


def write_html(ctx: ReportContext) -> list[Path]:
    path = ctx.out_dir / "leaderboard.html"
    write_atomic(path, render_page(ctx))
    return [path]
