"""Records -> pandas -> leaderboards. Every table is rebuilt from stored records alone.

:func:`load_frame` flattens records into one row per cell; :func:`leaderboards` turns the ok rows
into display tables (units and ↑/↓ in headers, deltas against the dense baseline, deterministic
sorting); :func:`failures` lists failed cells. Reporter plugins write these in their formats.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .cells import TRACK_ORDER
from .records import Record, iter_records
from .reportspec import MetricMeta, ReportContext, ReporterSpec

__all__ = [
    "ReporterSpec",
    "ReportContext",
    "MetricMeta",
    "load_frame",
    "leaderboards",
    "failures",
    "metric_meta",
    "header",
    "primary_metric",
]

BITS_PER_MB = 8 * 1_000_000


def _value(metric: Any) -> float:
    if not isinstance(metric, dict):
        return math.nan
    v = metric.get("value")
    if v is None:
        return math.nan
    if isinstance(v, str):
        return math.inf if v == "inf" else -math.inf
    return float(v)


def _row(rec: Record) -> dict[str, Any]:
    size = rec.get("size") or {}
    pipeline = rec.get("compressor", {}).get("pipeline", [])
    row: dict[str, Any] = {
        "cell_id": rec["cell_id"],
        "suite": rec.get("suite"),
        "status": rec["status"],
        "model": rec["model"].get("label", rec["model"]["name"]),
        "model_name": rec["model"]["name"],
        "checkpoint": rec["model"].get("checkpoint"),
        "dataset": (rec.get("dataset") or {}).get("name"),
        "method": rec["label"],
        "compressors": " > ".join(s["name"] for s in pipeline) or "dense",
        "family": rec.get("family"),
        "track": rec.get("track"),
        "identity": rec.get("compressor", {}).get("identity", False),
        "total_bits": size.get("total_bits"),
        "baseline_bits": size.get("baseline_bits"),
        "ratio_model": size.get("ratio_model"),
        "ratio_layers": size.get("ratio_layers"),
        "disk_bytes": size.get("disk_bytes"),
        "seconds": (rec.get("timings") or {}).get("total"),
        "device": (rec.get("environment") or {}).get("device"),
        "error_type": (rec.get("error") or {}).get("type"),
        "error": ((rec.get("error") or {}).get("message") or "").splitlines()[0:1],
    }
    row["error"] = row["error"][0] if row["error"] else ""
    for name, m in (rec.get("metrics") or {}).items():
        row[f"metric:{name}"] = _value(m)
    return row


def load_frame(
    out_dir: str | os.PathLike[str], only_current: bool = True
) -> tuple[pd.DataFrame, list[MetricMeta], dict[str, Any]]:
    """Rows of every record in a run folder, the metrics' metadata, and the run's report settings.

    Args:
        only_current: keep only the cells of the suite as it was last run (``run.json``), so cells
            of an older version of the suite do not linger in the tables.
    """
    out_dir = Path(out_dir)
    run = {}
    run_file = out_dir / "run.json"
    if run_file.is_file():
        run = json.loads(run_file.read_text())
    records = list(iter_records(out_dir))
    if only_current and run.get("cells"):
        order = {cid: i for i, cid in enumerate(run["cells"])}
        records = sorted((r for r in records if r["cell_id"] in order), key=lambda r: order[r["cell_id"]])
    frame = pd.DataFrame([_row(r) for r in records])
    metas = metric_meta(records, run.get("metrics"))
    return frame, metas, {"suite": run.get("suite", out_dir.name), **(run.get("report") or {})}


def metric_meta(records: Sequence[Record], order: Sequence[str] | None = None) -> list[MetricMeta]:
    found: dict[str, MetricMeta] = {}
    for rec in records:
        for name, m in (rec.get("metrics") or {}).items():
            if name not in found:
                found[name] = MetricMeta(name, m.get("unit", ""), bool(m.get("higher_is_better", True)),
                                         m.get("kind", "quality"), tuple(m.get("roles", ())), int(m.get("rank", 100)),
                                         m.get("identity_target"), m.get("description", ""))
    names = [n for n in (order or []) if n in found] + sorted(n for n in found if n not in (order or []))
    return [found[n] for n in names]


def header(meta: MetricMeta) -> str:
    arrow = "↑" if meta.higher_is_better else "↓"
    if meta.unit == "bits":
        return f"size [MB] {arrow}"
    unit = f" [{meta.unit}]" if meta.unit else ""
    return f"{meta.name}{unit} {arrow}"


def primary_metric(metas: Sequence[MetricMeta], preferred: str | None = None) -> MetricMeta | None:
    """The quality metric of Pareto plots and equal-bits comparisons: ``preferred`` (the suite's
    ``report.primary``), else the best-ranked metric registered with the "primary" role."""
    by_name = {m.name: m for m in metas}
    if preferred and preferred in by_name:
        return by_name[preferred]
    primary = sorted((m for m in metas if "primary" in m.roles), key=lambda m: (m.rank, m.name))
    if primary:
        return primary[0]
    quality = [m for m in metas if m.kind == "quality"]
    return quality[0] if quality else None


def _display_value(meta: MetricMeta, value: float) -> float:
    return value / BITS_PER_MB if meta.unit == "bits" else value


def leaderboards(frame: pd.DataFrame, metas: Sequence[MetricMeta], settings: dict[str, Any]) -> list[tuple[str, pd.DataFrame]]:
    """One display table per (model, dataset): ok cells, dense baseline first, then sorted.

    Sorting: by data track (when grouped by track), then ``sort_by`` in its better direction,
    then method name, so the order is the same on every rebuild.
    """
    if frame.empty or "status" not in frame:
        return []
    ok = frame[frame["status"] == "ok"]
    sort_by = settings.get("sort_by")
    group_by = settings.get("group_by", "track")
    tables = []
    for (model, dataset), group in ok.groupby(["model", "dataset"], dropna=False, sort=True):
        dense = group[group["compressors"] == "dense"]
        base = dense.iloc[0] if len(dense) else None
        rows = []
        for _, r in group.iterrows():
            row: dict[str, Any] = {"method": r["method"], "family": r["family"], "track": r["track"]}
            for meta in metas:
                if "check" in meta.roles:  # theory checks have their own section
                    continue
                col = f"metric:{meta.name}"
                value = r.get(col, math.nan)
                row[header(meta)] = _display_value(meta, value)
                if meta.kind == "quality" and base is not None:
                    delta = value - base.get(col, math.nan)
                    row[f"Δ {meta.name}"] = delta if r["compressors"] != "dense" else math.nan
            row["cell"] = r["cell_id"]
            row["_dense"] = r["compressors"] == "dense"
            row["_track"] = TRACK_ORDER.index(r["track"]) if r["track"] in TRACK_ORDER else 99
            row["_family"] = r["family"] or ""
            if sort_by:
                meta = next(m for m in metas if m.name == sort_by)
                v = r.get(f"metric:{sort_by}", math.nan)
                row["_sort"] = -v if meta.higher_is_better else v
            else:
                row["_sort"] = 0.0
            rows.append(row)
        table = pd.DataFrame(rows)
        keys = ["_dense"]
        asc = [False]
        if group_by == "track":
            keys.append("_track")
            asc.append(True)
        elif group_by == "family":
            keys.append("_family")
            asc.append(True)
        keys += ["_sort", "method", "cell"]
        asc += [True, True, True]
        table = table.sort_values(keys, ascending=asc, na_position="last", kind="mergesort")
        table = table.drop(columns=[c for c in table.columns if c.startswith("_")]).reset_index(drop=True)
        title = f"{model} on {dataset}" if isinstance(dataset, str) else str(model)
        tables.append((title, table))
    return tables


def failures(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or "status" not in frame:
        return pd.DataFrame(columns=["model", "method", "error", "cell"])
    bad = frame[frame["status"] != "ok"]
    table = pd.DataFrame({
        "model": bad["model"],
        "method": bad["method"],
        "error": bad["error_type"].fillna("") + ": " + bad["error"].fillna(""),
        "cell": bad["cell_id"],
    })
    return table.sort_values(["model", "method", "cell"], kind="mergesort").reset_index(drop=True)
