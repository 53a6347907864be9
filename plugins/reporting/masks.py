"""The mask picture of segmentation runs: per model, one image, its truth, the dense mask and each method's.

Segmentation users look before they read (the Big2Small paper's Fig. 5 shows this for antennas). Each
segmentation record keeps its predicted mask of one eval example, the example's truth and a thumbnail
(``details.preview``, :mod:`b2s_bench_plugins.evaluation.segmentation_preview`), so the picture is drawn
from the records alone. Per model and dataset: the input, the ground truth, the dense model's mask, then
each method's (its first seed), labelled with the method and its stored size, the largest first; in a
method's mask, pixels that differ from the dense model's mask are red (binary: foreground lost; blue:
foreground added). Binary masks are white on black;
more classes take matplotlib's "tab20" colours; pixels the truth ignores are grey.

The HTML page embeds the grids (:mod:`.page`); the ``masks`` reporter writes them as ``masks-MODEL.png``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from b2s_bench import write_atomic
from b2s_bench.reporting import BITS_PER_MB, ReportContext, short_labels

from ..evaluation.segmentation_preview import decode_image, decode_mask
from .plots import _png, _pyplot

__all__ = ["COLUMNS", "DIFFERS", "ADDED", "mask_grids", "write_masks", "colour_mask"]

#: panels in one row of a grid
COLUMNS = 6
#: the colour of a pixel where a method's mask differs from the dense model's: foreground the dense
#: model has and the method lost (or, with more than 2 classes, any other class)
DIFFERS = (220, 30, 30)
#: binary masks: foreground the method adds where the dense model has background
ADDED = (40, 120, 255)
_IGNORED = (128, 128, 128)


def colour_mask(labels: np.ndarray, classes: int, reference: np.ndarray | None = None) -> np.ndarray:
    """An H×W class map as H×W×3 uint8: binary white on black, else "tab20"; ignored (255) grey; pixels
    that differ from ``reference`` (the dense model's mask) in :data:`DIFFERS`, except binary foreground
    the method adds, in :data:`ADDED`."""
    labels = np.asarray(labels)
    if classes <= 2:
        palette = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)
    else:
        cmap = _pyplot().get_cmap("tab20")
        palette = np.array([[round(255 * v) for v in cmap(i % 20)[:3]] for i in range(classes)], np.uint8)
    table = np.zeros((256, 3), np.uint8)
    table[: len(palette)] = palette
    table[255] = _IGNORED
    out = table[labels]
    if reference is not None and reference.shape == labels.shape:
        out[labels != reference] = DIFFERS
        if classes <= 2:
            out[(labels == 1) & (reference == 0)] = ADDED
    return out


def _decoded(preview: dict[str, Any], key: str) -> np.ndarray | None:
    entry = preview.get(key)
    if not isinstance(entry, dict):
        return None
    try:
        return decode_image(entry) if key == "image" else decode_mask(entry)
    except ValueError:
        return None  # a damaged entry leaves its panel out; the numbers in the tables are unaffected


def _size(bits: Any) -> str:
    """Stored bits as MB to 3 significant digits ("" when unknown)."""
    try:
        mb = float(bits) / BITS_PER_MB
    except (TypeError, ValueError):
        return ""
    return f"{mb:.3g} MB" if math.isfinite(mb) else ""


def _panels(group: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """(title, H×W×3 picture) of one model's grid: the example the dense record pictures (else the first
    record's), and only records that picture that example."""
    rows = group.sort_values(["seed", "cell_id"], kind="mergesort").drop_duplicates("method")
    dense = rows[rows["family"] == "dense"]
    first = (dense if len(dense) else rows).iloc[0]
    example = first["preview"].get("example")
    rows = rows[[p.get("example") == example for p in rows["preview"]]]
    classes = int(first["preview"].get("classes") or 2)
    panels: list[tuple[str, np.ndarray]] = []
    holders = [p for p in (list(dense["preview"]) + list(rows["preview"])) if p.get("example") == example]
    image = next((img for p in holders if (img := _decoded(p, "image")) is not None), None)
    truth = next((m for p in holders if (m := _decoded(p, "truth")) is not None), None)
    if image is not None:
        panels.append((f"input (example {example})", image))
    if truth is not None:
        panels.append(("ground truth", colour_mask(truth, classes)))
    reference = _decoded(first["preview"], "mask") if len(dense) else None
    if reference is not None:
        panels.append((f"dense\n{_size(first['total_bits'])}", colour_mask(reference, classes)))
    methods = rows[rows["family"] != "dense"].sort_values(["total_bits", "method"], ascending=[False, True], kind="mergesort")
    names = short_labels([str(m) for m in methods["method"]], 26)
    for _, r in methods.iterrows():
        mask = _decoded(r["preview"], "mask")
        if mask is not None:
            panels.append((f"{names[str(r['method'])]}\n{_size(r['total_bits'])}", colour_mask(mask, classes, reference)))
    return panels


def _grid_png(panels: list[tuple[str, np.ndarray]], title: str) -> bytes:
    plt = _pyplot()
    cols = min(COLUMNS, len(panels))
    rows = math.ceil(len(panels) / cols)
    h, w = panels[0][1].shape[:2]
    width = 2.1
    fig, axes = plt.subplots(rows, cols, figsize=(cols * width, rows * (width * h / w + 0.55) + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, picture) in zip(axes.flat, panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(label, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def mask_grids(ctx: ReportContext) -> list[tuple[str, bytes]]:
    """(title, PNG) per model and dataset whose records keep segmentation previews; [] when none do."""

    def make() -> list[tuple[str, bytes]]:
        frame = ctx.frame
        if frame.empty or "preview" not in frame:
            return []
        ok = frame[
            (frame["status"] == "ok") & frame["preview"].map(lambda p: isinstance(p, dict) and p.get("task") == "segmentation")
        ]
        out = []
        for (model, dataset), group in ok.groupby(["model", ok["dataset"].fillna("")], sort=True):
            panels = _panels(group)
            if panels:
                title = f"{model} on {dataset}" if dataset else str(model)
                out.append((title, _grid_png(panels, title)))
        return out

    result: list[tuple[str, bytes]] = ctx.cached("masks", make)
    return result


def _slug(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", title).strip("-") or "model"


def write_masks(ctx: ReportContext) -> list[Path]:
    """masks-MODEL.png for every model whose records keep segmentation previews."""
    written = []
    for title, data in mask_grids(ctx):
        path = ctx.out_dir / f"masks-{_slug(title)}.png"
        write_atomic(path, data)
        written.append(path)
    return written
