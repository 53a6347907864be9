"""A site index: one self-contained ``index.html`` over every run folder under a root (``results/``).

Each run is a row, as a leaderboard site shows it: the suite name (linking its leaderboard), its
models, a one-line description (the whole one is on the run's page and in the tooltip), the headline
(per model, the best method by the primary metric among those at least :data:`HEADLINE_RATIO` times
smaller than fp32), the cell counts (ok, failed, without a record yet), the date its last cell
finished and the code (git commit) that made it. Everything comes from ``run.json`` and the
records, so ``b2s-bench publish`` can rebuild the index after every publish. The table keeps fixed
column shares at desktop widths and turns into one card per run below 900 pixels, so no column is
ever squeezed to a letter a line (tests/plugins/reporting/test_html.py looks at both widths in Chromium).
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..store.records import SKIPPED_STATUSES, iter_records, write_atomic

__all__ = ["find_runs", "run_summary", "write_site_index", "site_index_page", "headline", "one_line", "HEADLINE_RATIO"]

#: the headline of a run: per model, the best method at least this many times smaller than fp32
HEADLINE_RATIO = 4.0
#: the index's one-line description: the first sentence, cut to this many characters
ONE_LINE = 110

_SKIP = {"cells", "artifacts", ".git", "__pycache__"}

# Column shares that hold at 1,400 px; names and commits never break inside a word (a long
# description used to take the width and wrap the suite names letter by letter). Below 900 px each
# run is a card whose cells are labelled lines.
STYLE = (
    "*{box-sizing:border-box}"
    "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1360px;padding:0 1em;color:#222;"
    "line-height:1.35}"
    "table{border-collapse:collapse;width:100%;table-layout:fixed;font-size:14px}"
    "th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:break-word}"
    "th{background:#f3f3f3;cursor:pointer;position:sticky;top:0}td.n{white-space:nowrap}"
    "col.suite{width:16%}col.models{width:13%}col.desc{width:22.5%}col.head{width:23%}col.cells{width:9%}"
    "col.date{width:7.5%}col.commit{width:9%}"
    "td.suite a{font-weight:600}"
    "ul.best{margin:0;padding-left:1.1em}small{color:#666}"
    "code{font-size:90%}.bad{color:#b00020;font-weight:600}"
    "@media (max-width:900px){table,tbody,tr,td{display:block;width:100%}thead,colgroup{display:none}"
    "tr{border:1px solid #ccc;border-radius:6px;margin:0 0 1em;padding:.3em 0}"
    "td{border:none;padding:2px 10px 2px 9em;position:relative}"
    "td::before{content:attr(data-label);position:absolute;left:10px;width:8em;color:#666;font-size:12px}"
    "td.n{white-space:normal}}"
)
SORT_JS = """
document.querySelectorAll('th').forEach(function (th, idx) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], asc = th.dataset.order !== 'asc';
    th.dataset.order = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[idx].dataset.v || a.cells[idx].textContent, y = b.cells[idx].dataset.v || b.cells[idx].textContent;
      var c = x.localeCompare(y, undefined, {numeric: true});
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def is_moved_aside(name: str) -> bool:
    """A file or folder ``publish`` moved out of the way (``NAME.replaced-STAMP``)."""
    return ".replaced-" in name


def find_runs(root: str | os.PathLike[str]) -> list[Path]:
    """Every folder under ``root`` (itself included) that holds a ``run.json`` or a ``cells/`` folder."""
    root = Path(root)
    found = []
    for folder, dirs, files in os.walk(root):
        # a folder `publish --replace` moved aside (NAME.replaced-STAMP) is kept, not listed
        dirs[:] = sorted(d for d in dirs if d not in _SKIP and not d.startswith(".") and not is_moved_aside(d))
        if "run.json" in files or (Path(folder) / "cells").is_dir():
            found.append(Path(folder))
    return sorted(found)


def _short_commit(commit: Any) -> str:
    if not isinstance(commit, str) or not commit:
        return "–"
    dirty = commit.endswith("-dirty")
    return commit[:10] + (" (dirty)" if dirty else "")


def one_line(description: str, width: int = ONE_LINE) -> str:
    """The first sentence of a description, cut to ``width`` characters."""
    text = " ".join(description.split())
    end = text.find(". ")
    first = text[: end + 1] if end >= 0 else text
    return first if len(first) <= width else first[: width - 1].rstrip() + "…"


def headline(folder: str | os.PathLike[str], ratio: float = HEADLINE_RATIO) -> list[str]:
    """Per model, the best method by the run's primary metric among those at least ``ratio`` times
    smaller than fp32 (whole model), as "model: method value unit (N×)"; empty when the run has no
    primary metric or nothing that small."""
    from .tables import load_frame, methods, primary_metric, short_labels  # pandas: only when asked

    try:
        frame, metas, settings = load_frame(folder)
    except UserError:
        return []
    metric = primary_metric(metas, settings.get("primary"))
    if frame.empty or metric is None:
        return []
    table = methods(frame, metas)
    col = f"metric:{metric.name}"
    if table.empty or col not in table:
        return []
    small = table[~table["dense"] & (table["ratio_model"] >= ratio) & table[col].notna()]
    lines = []
    names = short_labels([str(m) for m in small["method"]], 40)
    for model, group in small.groupby("model", sort=True):
        best = group.sort_values(col, ascending=not metric.higher_is_better, kind="mergesort").iloc[0]
        value = float(best[col])
        unit = f" {metric.unit}" if metric.unit else ""
        lines.append(f"{model}: {names[str(best['method'])]} {metric.name} {value:.3g}{unit} ({float(best['ratio_model']):.3g}×)")
    return lines


def run_summary(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """What the index shows of one run folder."""
    folder = Path(folder)
    manifest: dict[str, Any] = {}
    try:
        manifest = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError, RecursionError):
        pass
    records = list(iter_records(folder))
    wanted = manifest.get("cells")
    if wanted:
        ids = set(wanted)
        records = [r for r in records if r["cell_id"] in ids]
    status = Counter(r.get("status") for r in records)
    commits = Counter(_short_commit((r.get("environment") or {}).get("git_commit")) for r in records)
    return {
        "suite": manifest.get("suite") or folder.name,
        "description": manifest.get("description") or "",
        "command": manifest.get("command") or "",
        "ok": status.get("ok", 0),
        "failed": status.get("error", 0),
        "not_applicable": sum(status.get(s, 0) for s in SKIPPED_STATUSES),
        "missing": len(set(wanted) - {r["cell_id"] for r in records}) if wanted else 0,
        "finished": max((r.get("finished_at") or "" for r in records), default="")[:10],
        "commits": [c for c, _ in commits.most_common()],
        "models": sorted({(r.get("model") or {}).get("label") or (r.get("model") or {}).get("name", "?") for r in records}),
    }


def _link(root: Path, folder: Path) -> str | None:
    for name in ("leaderboard.html", "leaderboard.md", "README.md"):
        if (folder / name).is_file():
            return (folder / name).relative_to(root).as_posix()
    return None


def _row(root: Path, folder: Path) -> str:
    s = run_summary(folder)
    link = _link(root, folder)
    rel = folder.relative_to(root).as_posix() if folder != root else "."
    name = html.escape(s["suite"])
    suite = f"<a href='{html.escape(link, quote=True)}'>{name}</a>" if link else name
    cells = f"{s['ok']} ok"
    if s["not_applicable"]:
        cells += f"<br>{s['not_applicable']} n/a or short"
    if s["failed"]:
        cells += f"<br><span class='bad'>{s['failed']} failed</span>"
    if s["missing"]:
        cells += f"<br>{s['missing']} to run"
    commits = "<br>".join(f"<code>{html.escape(c)}</code>" for c in s["commits"][:3]) or "–"
    best = headline(folder)
    head = ("<ul class='best'>" + "".join(f"<li>{html.escape(b)}</li>" for b in best) + "</ul>") if best else "–"
    full = html.escape(s["description"], quote=True)
    command = html.escape(s["command"] or "", quote=True)
    return (
        f"<tr><td class='suite' data-label='suite' title='{command}'>{suite}<br><small>{html.escape(rel)}</small></td>"
        f"<td data-label='models'>{html.escape(', '.join(s['models']))}</td>"
        f"<td data-label='about' title='{full}'>{html.escape(one_line(s['description'])) or '–'}</td>"
        f"<td data-label='best at ≥ {HEADLINE_RATIO:g}×'>{head}</td>"
        f"<td class='n' data-label='cells' data-v='{s['ok']:06d}'>{cells}</td>"
        f"<td class='n' data-label='finished'>{html.escape(s['finished'] or '–')}</td>"
        f"<td class='commit' data-label='commit'>{commits}</td></tr>"
    )


def write_site_index(root: str | os.PathLike[str]) -> Path:
    """Write ``root/index.html`` listing every run folder under ``root``; returns its path."""
    path = Path(root) / "index.html"
    write_atomic(path, site_index_page(root))
    return path


def site_index_page(root: str | os.PathLike[str]) -> str:
    """The HTML of ``root/index.html``: every run folder under ``root``."""
    root = Path(root)
    runs = [f for f in find_runs(root) if f != root]
    rows = "".join(_row(root, f) for f in runs) or "<tr><td colspan='7'>no run folders yet</td></tr>"
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>b2s-bench results</title><style>{STYLE}</style></head><body>"
        "<h1>b2s-bench results</h1><p>Every run folder here, each rebuilt from its records "
        f"(<code>b2s-bench report FOLDER</code>). The headline: per model, the best method by the run's "
        f"primary metric among those at least {HEADLINE_RATIO:g}× smaller than fp32. Click a header to sort.</p>"
        "<table><colgroup><col class='suite'><col class='models'><col class='desc'><col class='head'>"
        "<col class='cells'><col class='date'><col class='commit'></colgroup>"
        "<thead><tr><th>suite</th><th>models</th><th>about</th>"
        f"<th>best at ≥ {HEADLINE_RATIO:g}×</th><th>cells</th><th>finished</th><th>commit</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        f"<script>{SORT_JS}</script></body></html>"
    )
    return page
