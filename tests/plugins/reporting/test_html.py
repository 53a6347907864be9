"""The HTML leaderboard and the site index in a real browser (headless Chromium from Debian:
``apt-get install -y chromium``): they fit a 1,400-pixel window without a horizontal page scroll,
log no console errors, and their tables sort, filter and hide columns. Skipped where Chromium is
absent. The page's own script runs; a probe script added to a copy of the page records errors and
writes what it measured into the DOM, which ``--dump-dom`` prints."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fake_records import make_record, outcomes, rd_details, write_run
from helpers import run_cli

from b2s_bench.reporting.site import find_runs, run_summary, write_site_index

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars=false",
    "--window-size=1400,1000",
    "--enable-logging=stderr",
    "--v=0",
]

#: runs first (in <head>): records uncaught errors and console.error calls
CATCH = """<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push('error: ' + e.message); });
(function () { var orig = console.error; console.error = function () {
  window.__errors.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); orig.apply(console, arguments); }; })();
</script>"""

#: runs after the page's own script, on load: measures, then clicks, types and toggles
PROBE = """<script>
window.addEventListener('load', function () {
  var out = {}, doc = document.documentElement;
  try {
    out.innerWidth = window.innerWidth;
    out.scrollWidth = doc.scrollWidth;
    out.clientWidth = doc.clientWidth;
    var th = document.querySelector('table.lb thead th');
    out.sticky = th ? getComputedStyle(th).position : null;
    out.wraps = Array.prototype.map.call(document.querySelectorAll('.wrap'), function (w) {
      return {overflowX: getComputedStyle(w).overflowX, inner: w.scrollWidth, outer: w.clientWidth,
              right: w.getBoundingClientRect().right};
    });
    out.images = Array.prototype.map.call(document.images, function (img) { return img.naturalWidth; });
    var warn = document.querySelector('td.warn');
    out.warnColor = warn ? getComputedStyle(warn).color : null;
    var table = document.querySelector('table.lb'), heads = table ? table.tHead.rows[0].cells : [];
    function column(name) {
      var idx = Array.prototype.findIndex.call(heads, function (h) { return h.dataset.col === name; });
      return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[idx].dataset.v; });
    }
    function click(name) {
      Array.prototype.find.call(heads, function (h) { return h.dataset.col === name; }).click();
    }
    if (table) {
      click('ratio [x] ↑'); out.ratioAsc = column('ratio [x] ↑');
      click('ratio [x] ↑'); out.ratioDesc = column('ratio [x] ↑');
      click('method'); out.methodAsc = column('method');
      var filter = document.getElementById('filter');
      filter.value = 'PRUNE';
      filter.dispatchEvent(new Event('input'));
      out.visible = Array.prototype.filter.call(document.querySelectorAll('table.lb tbody tr'),
        function (tr) { return !tr.hidden; }).map(function (tr) { return tr.cells[0].textContent; });
      var box = document.querySelector('#columns input[data-col="family"]');
      out.toggles = document.querySelectorAll('#columns input').length;
      box.click();
      out.familyHidden = Array.prototype.every.call(document.querySelectorAll('table.lb'), function (t) {
        var i = Array.prototype.findIndex.call(t.tHead.rows[0].cells, function (h) { return h.dataset.col === 'family'; });
        return Array.prototype.every.call(t.rows, function (r) { return r.cells[i].hidden; });
      });
    }
  } catch (e) { window.__errors.push('probe: ' + e.message); }
  out.errors = window.__errors;
  document.body.setAttribute('data-probe', JSON.stringify(out));
});
</script>"""


def _chromium(args: list[str], profile: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def probe(page: Path, tmp_path: Path) -> dict[str, Any]:
    """Open a copy of ``page`` with the probe scripts at 1400×1000; what the probe measured."""
    text = page.read_text()
    copy = page.with_name("probe-" + page.name)
    copy.write_text(text.replace("<head>", "<head>" + CATCH, 1).replace("</body>", PROBE + "</body>", 1))
    result = _chromium(["--dump-dom", copy.as_uri()], tmp_path / "profile")
    found = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert found, f"no probe result; chromium said: {result.stderr[-2000:]}"
    data = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    # what the page logged to the console, as Chromium reports it (belt and braces with the probe)
    data["console"] = [ln for ln in result.stderr.splitlines() if "CONSOLE" in ln and ("Uncaught" in ln or "rror" in ln)]
    return data


def screenshot(page: Path, tmp_path: Path) -> tuple[int, int]:
    shot = tmp_path / "shot.png"
    _chromium([f"--screenshot={shot}", page.as_uri()], tmp_path / "profile-shot")
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def wide_run(folder: Path) -> Path:
    """A run whose tables are far wider than a window: long method names, many metrics, three models."""
    long = "pipeline(" + ", ".join(f"stage{i}=quantize(bits={i}, granularity=channel)" for i in range(4)) + ")"
    metrics = {f"a_rather_long_metric_name_{i}": float(i) for i in range(14)}
    records = []
    for model in ("tiny:cnn", "timm:tf_efficientnet_lite0", "zoo:fmnist-cnn"):
        records += [
            make_record("dense", "dense", model=model, bits=8_000_000, values={"top1": outcomes(0.9, 500, 0), **metrics}),
            make_record(long, model=model, values={"top1": outcomes(0.8, 500, 1), **metrics}, details=rd_details(4.0, 0.001)),
            make_record(
                "prune(sparsity=0.9)",
                "pruning",
                model=model,
                bits=1_500_000,
                values={"top1": outcomes(0.5, 500, 2), **metrics},
                details=rd_details(8.0, 0.01),
            ),
            make_record("quantize(bits=2)", model=model, bits=600_000, values={"top1": outcomes(0.3, 500, 3), **metrics}),
        ]
    records += [
        make_record(
            f"lowrank(rank={r})", "lowrank", bits=3_000_000 + r, num_classes=10, values={"top1": outcomes(0.1 - r / 100, 500, r)}
        )
        for r in (1, 2)
    ]  # both at chance
    records += [
        make_record("prune(sparsity=0.95)", "pruning", seed=s, bits=1_200_000, values={"top1": outcomes(0.4 + s / 50, 500, s)})
        for s in (0, 1)
    ]
    records.append(make_record("broken(" + "y" * 150 + ")", status="error"))
    return write_run(folder, records, metrics=("top1", "bits", "ratio", *metrics))


@needs_chromium
def test_leaderboard_page_in_a_browser(tmp_path: Path) -> None:
    folder = wide_run(tmp_path / "run")
    assert run_cli("report", str(folder)) == 0
    page = folder / "leaderboard.html"
    data = probe(page, tmp_path)
    assert data["errors"] == [] and data["console"] == []
    assert data["innerWidth"] == 1400
    assert data["scrollWidth"] <= data["clientWidth"]  # no horizontal page scroll
    assert data["sticky"] == "sticky"
    assert any(w["inner"] > w["outer"] for w in data["wraps"])  # a wide table scrolls in its own box
    assert all(w["overflowX"] == "auto" and w["right"] <= data["clientWidth"] for w in data["wraps"])
    assert len(data["images"]) == 2 and all(width > 0 for width in data["images"])  # pareto and weights plots
    assert data["warnColor"] == "rgb(176, 0, 32)"  # below the Gaussian limit, in red
    ratios = [float(v) for v in data["ratioAsc"]]
    assert ratios == sorted(ratios) and [float(v) for v in data["ratioDesc"]] == sorted(ratios, reverse=True)
    assert data["methodAsc"] == sorted(data["methodAsc"], key=str)
    assert data["visible"] and all("prune" in m for m in data["visible"])  # the filter ignores case
    assert data["toggles"] > 10 and data["familyHidden"]
    text = page.read_text()
    assert "Comparisons at equal bits" in text and "Theory checks" in text and "both fail" in text
    assert screenshot(page, tmp_path) == (1400, 1000)


@needs_chromium
def test_site_index_in_a_browser(tmp_path: Path) -> None:
    root = tmp_path / "results"
    wide_run(root / "wide")
    assert run_cli("report", str(root / "wide"), "--format", "html") == 0
    write_run(
        root / "nested" / "small",
        [make_record("dense", "dense", bits=8_000_000, values={"top1": 90.0}, commit="0123456789abcdef-dirty")],
        suite="small",
        description="the " + "very " * 60 + "long description",
    )
    index = write_site_index(root)
    data = probe(index, tmp_path)
    assert data["errors"] == [] and data["console"] == []
    assert data["scrollWidth"] <= data["clientWidth"]


def test_site_index_lists_every_run(tmp_path: Path) -> None:
    root = tmp_path / "results"
    wide_run(root / "wide")
    (root / "wide" / "leaderboard.html").write_text("<html></html>")
    write_run(
        root / "nested" / "small",
        [make_record("dense", "dense", bits=8_000_000, values={"top1": 90.0}, commit="0123456789abcdef-dirty")],
        suite="small",
    )
    (root / "empty").mkdir()
    assert find_runs(root) == [root / "nested" / "small", root / "wide"]
    wide = run_summary(root / "wide")
    assert (wide["ok"], wide["failed"], wide["missing"], wide["finished"]) == (16, 1, 0, "2026-01-02")
    assert wide["commits"] == ["abc1234567"] and "zoo:fmnist-cnn" in wide["models"]
    text = write_site_index(root).read_text()
    assert "href='wide/leaderboard.html'" in text and "href='nested/small/leaderboard.md'" not in text
    assert "0123456789 (dirty)" in text and "<span class='bad'>1 failed</span>" in text
    assert "b2s-bench run small.yaml" in text and "nested/small" in text
    (root / "nested" / "small" / "leaderboard.md").write_text("# x")
    assert "href='nested/small/leaderboard.md'" in write_site_index(root).read_text()


#: measures the site index's layout: column widths, and the lines each suite name and commit takes
SITE_PROBE = """<script>
window.addEventListener('load', function () {
  var out = {}, doc = document.documentElement;
  function lines(el) {  // the lines of text an element's text wraps to
    var range = document.createRange(); range.selectNodeContents(el);
    var tops = {}; Array.prototype.forEach.call(range.getClientRects(), function (r) { tops[Math.round(r.top)] = 1; });
    return Object.keys(tops).length;
  }
  out.innerWidth = window.innerWidth; out.scrollWidth = doc.scrollWidth; out.clientWidth = doc.clientWidth;
  out.heads = Array.prototype.map.call(document.querySelectorAll('thead th'), function (th) {
    return th.offsetParent ? th.getBoundingClientRect().width : 0; });
  out.rows = Array.prototype.map.call(document.querySelectorAll('tbody tr'), function (tr) {
    return {display: getComputedStyle(tr).display,
            cells: Array.prototype.map.call(tr.cells, function (td) { return td.getBoundingClientRect().width; }),
            suiteLines: lines(tr.querySelector('td.suite').firstChild),
            commitLines: lines(tr.querySelector('td.commit code'))};
  });
  document.body.setAttribute('data-probe', JSON.stringify(out));
});
</script>"""


def site_probe(page: Path, tmp_path: Path, width: int) -> dict[str, Any]:
    """The site index at ``width`` pixels: a screenshot into tmp_path and what SITE_PROBE measured."""
    flags = [f"--window-size={width},900" if f.startswith("--window-size") else f for f in FLAGS]
    copy = page.with_name(f"probe-{width}-" + page.name)
    copy.write_text(page.read_text().replace("</body>", SITE_PROBE + "</body>", 1))
    run = [CHROMIUM or "chromium", *flags, f"--user-data-dir={tmp_path / f'profile-{width}'}"]
    shot = tmp_path / f"site-{width}.png"
    subprocess.run([*run, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=False)
    assert struct.unpack(">II", shot.read_bytes()[16:24]) == (width, 900)
    result = subprocess.run([*run, "--dump-dom", copy.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert found, f"no probe result; chromium said: {result.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@needs_chromium
def test_site_index_reads_at_desktop_and_narrow_widths(tmp_path: Path) -> None:
    root = tmp_path / "results"
    wide_run(root / "wide")
    write_run(
        root / "nested" / "imagenet-quantize-and-prune-sweep",
        [make_record("dense", "dense", bits=8_000_000, values={"top1": 90.0}, commit="0123456789abcdef")],
        suite="imagenet-quantize-and-prune-sweep",
        description="Post-training quantization of ImageNet models. " + "A long paragraph goes on. " * 30,
    )
    index = write_site_index(root)
    wide = site_probe(index, tmp_path, 1400)
    assert wide["scrollWidth"] <= wide["clientWidth"]  # no horizontal scroll at 1,400 px
    assert len(wide["heads"]) == 7 and min(wide["heads"]) >= 80  # no column squeezed by the description
    for row in wide["rows"]:
        assert row["display"] == "table-row" and min(row["cells"]) >= 80
        assert row["suiteLines"] <= 2 and row["commitLines"] == 1  # never a letter or a digit a line
    narrow = site_probe(index, tmp_path, 800)
    assert narrow["scrollWidth"] <= narrow["clientWidth"]  # no horizontal scroll at 800 px
    for row in narrow["rows"]:  # one card per run: every cell takes the card's width
        assert row["display"] == "block" and min(row["cells"]) >= 600
        assert row["suiteLines"] == 1 and row["commitLines"] == 1
    text = index.read_text()
    assert "Post-training quantization of ImageNet models." in text and "A long paragraph goes on. A long" in text
    assert "best at ≥ 4×" in text and "tiny:cnn: " in text  # the headline names the model and its best method


def test_headline_is_the_best_method_at_the_stated_ratio(tmp_path: Path) -> None:
    from b2s_bench.reporting.site import headline, one_line

    run = write_run(
        tmp_path / "run",
        [
            make_record("dense", "dense", bits=8_000_000, values={"top1": 90.0}),
            make_record("quantize(bits=8)", bits=2_000_000, values={"top1": 89.0}),  # 4x: qualifies, best
            make_record("quantize(bits=4)", bits=1_000_000, values={"top1": 85.0}),  # 8x: qualifies
            make_record("prune(sparsity=0.1)", "pruning", bits=7_000_000, values={"top1": 89.9}),  # < 4x: not
        ],
    )
    assert headline(run) == ["tiny:cnn: quantize(bits=8) top1 89 % (4×)"]
    assert headline(run, ratio=5.0) == ["tiny:cnn: quantize(bits=4) top1 85 % (8×)"]
    assert one_line("First sentence. Second one.") == "First sentence."
    assert one_line("x" * 300, 20) == "x" * 19 + "…"
