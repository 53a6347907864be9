"""Reports of segmentation runs, from fake records: mIoU as the primary metric in leaderboards, the Pareto
plot and equal-bits verdicts; the mask grid drawn from the records' previews and embedded in the page."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from b2s_bench_plugins.evaluation import segmentation_preview as pv
from b2s_bench_plugins.reporting.masks import ADDED, DIFFERS, colour_mask, mask_grids
from b2s_bench_plugins.reporting.page import render_page
from b2s_bench_plugins.reporting.plots import pareto_png
from fake_records import make_record, write_run
from helpers import run_cli

from b2s_bench.reporting import ReportContext
from b2s_bench.reporting.tables import load_frame

H, W, IMAGES = 48, 64, 40


def car() -> tuple[np.ndarray, np.ndarray]:
    """A car-like truth (an ellipse with a one-pixel antenna) and a textured input for it."""
    yy, xx = np.mgrid[0:H, 0:W]
    truth = (((yy - 30) / 12.0) ** 2 + ((xx - 32) / 24.0) ** 2 <= 1).astype(np.uint8)
    truth[8:19, 44] = 1  # the antenna
    rng = np.random.default_rng(0)
    image = np.stack([truth * 1.5 + rng.normal(0, 0.4, (H, W)), np.sin(xx / 3.0), rng.normal(0, 1, (H, W))])
    return truth, image


def preview(mask: np.ndarray, truth: np.ndarray, image: np.ndarray) -> dict[str, Any]:
    """``details.preview`` as the segmentation metrics write it."""
    return {
        "preview": {
            "task": "segmentation",
            "example": 3,
            "classes": 2,
            "mask": pv.encode_mask(mask),
            "truth": pv.encode_mask(truth),
            "image": pv.encode_image(pv.stretch(image)),
        }
    }


def per_image(mean: float, seed: int) -> np.ndarray:
    """Per-image scores in [0, 1] around ``mean``."""
    return np.clip(np.random.default_rng(seed).normal(mean, 0.05, IMAGES), 0, 1)


def seg_run(folder: Path) -> Path:
    truth, image = car()
    no_antenna = truth.copy()
    no_antenna[8:19, 44] = 0
    eroded = no_antenna.copy()
    eroded[18:22, :] = 0
    rows = [  # method, family, bits, mIoU, mask
        ("dense", "dense", 8_000_000, 0.93, truth),
        ("quantize(bits=8)", "quantization", 2_000_000, 0.92, truth),
        ("quantize(bits=3)", "quantization", 760_000, 0.80, no_antenna),
        ("prune(sparsity=0.9)", "pruning", 780_000, 0.70, eroded),
        ("lowrank(rank=4)", "lowrank", 400_000, 0.50, eroded),
    ]
    records = [
        make_record(
            method,
            family,
            model="zoo:seg-unet",
            num_classes=1,  # one output channel: binary; 100 / 1 is no chance level for mIoU
            bits=bits,
            values={"miou": per_image(m, i), "dice": per_image(m + 0.03, i + 10)},
            details=preview(mask, truth, image),
        )
        for i, (method, family, bits, m, mask) in enumerate(rows)
    ]
    return write_run(folder, records, metrics=("miou", "dice", "bits", "ratio"))


def test_leaderboard_pareto_and_verdicts_with_miou_primary(tmp_path: Path) -> None:
    frame, metas, settings = load_frame(seg_run(tmp_path / "run"))
    ctx = ReportContext(tmp_path / "run", frame, metas, settings, "seg")
    primary = ctx.primary()
    assert primary is not None and primary.name == "miou"
    ((title, table),) = ctx.leaderboards()
    assert "zoo:seg-unet" in title and any("miou" in str(c) for c in table.columns)
    assert {"quantize(bits=3)", "prune(sparsity=0.9)"} <= set(table["method"])
    png = pareto_png(ctx)
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
    sections = dict(ctx.theory())
    equal = sections["Comparisons at equal bits (within 5 %)"]
    (row,) = equal.to_dict("records")  # 760,000 and 780,000 bits: within 5 %
    assert {row["A"], row["B"]} == {"quantize(bits=3)", "prune(sparsity=0.9)"}
    assert row["test"].startswith("paired bootstrap")  # per-image scores, not right/wrong outcomes
    lo, hi = row["95% CI of Δ"]
    assert hi < 0 and row["verdict"] == "quantize(bits=3) better"  # mIoU 80 vs 70 over 40 images
    assert "Pareto front: miou against stored bits" in sections


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_mask_grid_from_records_is_embedded_in_the_page(tmp_path: Path) -> None:
    folder = seg_run(tmp_path / "run")
    frame, metas, settings = load_frame(folder)
    ctx = ReportContext(folder, frame, metas, settings, "seg")
    ((title, png),) = mask_grids(ctx)
    assert title == "zoo:seg-unet on random"
    width, height = _png_size(png)
    assert width > 600 and 150 < height < width  # 7 panels: input, truth, dense and 4 methods, in 2 rows of 6
    page = render_page(ctx)
    assert "<h2>Masks</h2>" in page
    embedded = re.findall(r"<img src='data:image/png;base64,([^']+)' alt='masks: zoo:seg-unet on random'>", page)
    assert len(embedded) == 1 and base64.b64decode(embedded[0]) == png
    # the report command writes the page and, asked for it, the grid as a file; records.csv leaves previews out
    assert run_cli("report", str(folder), "--format", "html", "--format", "masks", "--format", "csv") == 0
    assert (folder / "masks-zoo-seg-unet-on-random.png").read_bytes() == png
    assert "preview" not in (folder / "records.csv").read_text().splitlines()[0].split(",")


def test_a_classification_run_has_no_mask_section(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "run", [make_record(values={"top1": 70.0})])
    frame, metas, settings = load_frame(folder)
    ctx = ReportContext(folder, frame, metas, settings, "s")
    assert mask_grids(ctx) == [] and "<h2>Masks</h2>" not in render_page(ctx)


def test_colours_mark_what_differs_from_the_dense_mask() -> None:
    dense = np.array([[0, 1, 0], [1, 255, 0]], np.uint8)
    method = np.array([[0, 0, 1], [1, 255, 0]], np.uint8)
    out = colour_mask(method, 2, dense)
    assert out[0, 0].tolist() == [0, 0, 0] and out[1, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == list(DIFFERS) and out[0, 2].tolist() == list(ADDED)  # foreground lost, added
    assert out[1, 1].tolist() == [128, 128, 128]  # ignored
    multi = colour_mask(np.array([[0, 1, 2]], np.uint8), 3)
    assert len({tuple(c) for c in multi[0].tolist()}) == 3  # three classes, three colours


CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)

#: after load: the natural size of each mask grid, as the browser decoded it
PROBE = """<script>window.addEventListener('load', function () {
  var sizes = Array.prototype.filter.call(document.images, function (i) { return i.alt.indexOf('masks:') === 0; })
    .map(function (i) { return [i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().right]; });
  document.body.setAttribute('data-masks', JSON.stringify(sizes));
});</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")
def test_mask_grid_shows_in_a_browser(tmp_path: Path) -> None:
    folder = seg_run(tmp_path / "run")
    assert run_cli("report", str(folder), "--format", "html") == 0
    page = folder / "leaderboard.html"
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>", 1))
    assert CHROMIUM is not None
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'p'}"]
        + ["--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = re.search(r'data-masks="([^"]*)"', result.stdout)
    assert found, result.stderr[-2000:]
    ((width, height, right),) = json.loads(found.group(1).replace("&quot;", '"'))
    assert width > 600 and height > 150 and right <= 1400  # decoded, and inside the window
