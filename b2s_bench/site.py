"""A site index: one self-contained ``index.html`` over every run folder under a root (``results/``).

Each run is a row: its suite name (linking its leaderboard), description, cell counts (ok, failed,
without a record yet), the date its last cell finished, the code (git commit) that made it, and
the command. Everything comes from ``run.json`` and the records, so ``b2s-bench publish`` can
rebuild the index after every publish.
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from .records import SKIPPED_STATUSES, iter_records, write_atomic

__all__ = ["find_runs", "run_summary", "write_site_index", "site_index_page"]

_SKIP = {"cells", "artifacts", ".git", "__pycache__"}

STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1360px;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;width:100%;table-layout:auto}"
         "th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}"
         "th{background:#f3f3f3;cursor:pointer;position:sticky;top:0}td.n{text-align:right;white-space:nowrap}"
         "code{font-size:90%}.bad{color:#b00020;font-weight:600}")
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
        "models": sorted({(r.get("model") or {}).get("label") or (r.get("model") or {}).get("name", "?")
                          for r in records}),
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
        cells += f", {s['not_applicable']} not applicable or short of target"
    if s["failed"]:
        cells += f", <span class='bad'>{s['failed']} failed</span>"
    if s["missing"]:
        cells += f", {s['missing']} to run"
    commits = ", ".join(f"<code>{html.escape(c)}</code>" for c in s["commits"][:3]) or "–"
    return (f"<tr><td>{suite}<br><small>{html.escape(rel)}</small></td>"
            f"<td>{html.escape(s['description'])}<br><small>{html.escape(', '.join(s['models']))}</small></td>"
            f"<td class='n' data-v='{s['ok']:06d}'>{cells}</td><td class='n'>{html.escape(s['finished'] or '–')}</td>"
            f"<td>{commits}</td><td><code>{html.escape(s['command'] or '–')}</code></td></tr>")


def write_site_index(root: str | os.PathLike[str]) -> Path:
    """Write ``root/index.html`` listing every run folder under ``root``; returns its path."""
    path = Path(root) / "index.html"
    write_atomic(path, site_index_page(root))
    return path


def site_index_page(root: str | os.PathLike[str]) -> str:
    """The HTML of ``root/index.html``: every run folder under ``root``."""
    root = Path(root)
    runs = [f for f in find_runs(root) if f != root]
    rows = "".join(_row(root, f) for f in runs) or "<tr><td colspan='6'>no run folders yet</td></tr>"
    page = ("<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>b2s-bench results</title><style>{STYLE}</style></head><body>"
            "<h1>b2s-bench results</h1><p>Every run folder here, each rebuilt from its records "
            "(<code>b2s-bench report FOLDER</code>). Click a header to sort.</p>"
            "<table><thead><tr><th>suite</th><th>description and models</th><th>cells</th><th>finished</th>"
            f"<th>commit</th><th>command</th></tr></thead><tbody>{rows}</tbody></table>"
            f"<script>{SORT_JS}</script></body></html>")
    return page
