"""Records -> pandas -> leaderboards. Every table is rebuilt from stored records alone.

:func:`load_frame` flattens records into one row per cell (with each metric's 95 % bootstrap
interval where the record stores per-example outcomes); :func:`methods` groups the cells of one
method that differ only in their seed (mean, std across seeds, a pooled interval);
:func:`leaderboards` turns those into display tables (units and ↑/↓ in headers, deltas against the
dense baseline, deterministic sorting); :func:`failures` lists failed cells, :func:`not_applicable`
the cells that are ``not-applicable`` or ``short-of-target`` (kept out of every ranking, front and
verdict: only ``ok`` cells make :func:`methods`), and :func:`caveat_notes` the footnotes of rows
marked :data:`CAVEAT_MARK`. Reporter plugins write these in their formats. Nothing here imports torch or the runner.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..compression.tracks import TRACKS
from ..errors import UserError
from ..fitting.belowlimit import gap_applies
from ..store import samples
from ..store.folder import RunStore
from ..store.records import SKIPPED_STATUSES, Record, iter_records
from . import stats

__all__ = [
    "OPERATING_POINT",
    "operating_point_text",
    "operating_point_note",
    "MetricMeta",
    "BITS_PER_MB",
    "load_frame",
    "methods",
    "leaderboards",
    "failures",
    "not_applicable",
    "caveat_notes",
    "CAVEAT_MARK",
    "NOT_APPLICABLE_TITLE",
    "metric_meta",
    "header",
    "shows_megabytes",
    "primary_metric",
    "check_settings",
    "sample_scale",
    "stats_note",
    "ci_column",
    "BELOW_LIMIT",
    "per_example_arrays",
    "aggregate_of",
    "short_labels",
]


@dataclasses.dataclass(frozen=True)
class MetricMeta:
    """A metric as its records describe it (``MetricSpec.record_entry``)."""

    name: str
    unit: str
    higher_is_better: bool
    kind: str  # "quality", "size", "weights", "time"
    roles: tuple[str, ...] = ()  # see b2s_bench.metrics.ROLES
    rank: int = 100
    identity_target: float | None = None
    description: str = ""
    #: how per-example outcomes give the value ("mean" or "exp_mean", b2s_bench.reporting.stats.aggregated);
    #: a record without the field (older than tasks) reads as "mean"
    aggregate: str = "mean"


BITS_PER_MB = 8 * 1_000_000
#: the note a result whose weight error is below the Gaussian rate-distortion limit carries
BELOW_LIMIT = "⚠ below the Gaussian limit"
#: marks a method whose records carry caveats (their messages are footnotes of the tables)
CAVEAT_MARK = "†"
#: the title of the table of cells kept out of the rankings
NOT_APPLICABLE_TITLE = "Not applicable / short of target"


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _elide(label: str, width: int, start: int) -> str:
    """``label`` in ``width`` characters, keeping its head and the part from ``start`` on (where it
    differs from the labels it would collide with): ``quantize(bits=4, gr…group_size=128)``."""
    # back to the start of the setting that differs (after ", " or "("), if that leaves room
    word = max(label.rfind(sep, 0, start) for sep in (" ", "(", ",")) + 1
    if 0 < start - word < width // 2:
        start = word
    tail = label[start:]
    if len(tail) + 2 <= width:  # the head, an ellipsis, the whole distinguishing tail
        return label[: width - 1 - len(tail)] + "…" + tail
    head = max(1, (width - 2) // 3)
    return label[:head] + "…" + label[start : start + width - head - 2] + "…"


def _settings(label: str) -> tuple[str, list[str]]:
    """``"quantize(bits=4, group_size=64)"`` -> ``("quantize(", ["bits=4", "group_size=64)"])``."""
    head, paren, rest = label.partition("(")
    return (head + paren, rest.split(", ")) if paren else ("", label.split(", "))


def _settings_that_differ(label: str, group: Sequence[str], width: int) -> str | None:
    """``label`` with the settings every label of ``group`` shares left out ("…"), if that fits."""
    head, parts = _settings(label)
    shared = set(parts)
    for other in group:
        shared &= set(_settings(other)[1])
    kept = [p for p in parts if p not in shared]
    if not kept or len(kept) == len(parts):
        return None
    for text in (head + "…" + ", ".join(kept), "…" + ", ".join(kept)):
        if len(text) <= width:
            return text
    return None


def short_labels(labels: Sequence[str], width: int) -> dict[str, str]:
    """Each label cut to ``width`` characters, never two different labels to the same text.

    A label that fits stays as it is; a longer one is cut at the end with "…", unless that would
    collide with another label's text: then it keeps its head and the part where it differs from
    the others (method settings differ at their ends: ``group_size=64`` against ``=128``). Should
    texts still meet, the last characters become a counter.
    """
    distinct = list(dict.fromkeys(str(x) for x in labels))
    width = max(width, 4)
    out = {x: x if len(x) <= width else x[: width - 1] + "…" for x in distinct}
    # labels that ever collided stay in one set, so what they share is judged over all of them
    together: dict[str, frozenset[str]] = {x: frozenset((x,)) for x in distinct}
    for _ in range(3):
        seen: dict[str, set[str]] = {}
        for x in distinct:
            seen.setdefault(out[x], set()).update(together[x])
        clashes = [frozenset(g) for text, g in seen.items() if sum(out[x] == text for x in distinct) > 1]
        if not clashes:
            return out
        for group in clashes:
            for x in group:
                together[x] = together[x] | group
        for group in clashes:
            for x in sorted(group):
                if len(x) > width:
                    members = sorted(together[x])
                    out[x] = _settings_that_differ(x, members, width) or _elide(
                        x, width, max(_common_prefix(x, y) for y in members if y != x)
                    )
    taken = {out[x] for x in distinct if len(x) <= width}
    for x in distinct:  # the last resort, for labels that differ only mid-way: a numbered ending
        if len(x) <= width:
            continue
        text, n = out[x], 1
        while text in taken:
            mark = f"…#{n}"
            text, n = out[x][: width - len(mark)] + mark, n + 1
        out[x] = text
        taken.add(text)
    return out


def _value(metric: Any) -> float:
    if not isinstance(metric, dict):
        return math.nan
    v = metric.get("value")
    if v is None:
        return math.nan
    if isinstance(v, str):
        return math.inf if v == "inf" else -math.inf
    return float(v)


def sample_scale(unit: str) -> float:
    """Display units per unit of a per-example mean: percentages are stored as 0/1 outcomes."""
    return 100.0 if unit == "%" else 1.0


def aggregate_of(entry: Any) -> str:
    """A record's metric entry's ``aggregate`` ("mean" when it has none: records older than tasks)."""
    found = entry.get("aggregate") if isinstance(entry, dict) else None
    return found if found in stats.AGGREGATES else "mean"


def per_example_arrays(rec: Record) -> dict[str, np.ndarray]:
    """The record's per-example arrays from which the metric's value follows by its aggregate (their
    mean, or exp of it: :func:`b2s_bench.reporting.stats.aggregated`); others are ignored: a metric
    whose value does not follow from its per-example values gets no interval."""
    out = {}
    for name, (arr, _) in _outcomes(rec).items():
        if arr is not None:
            out[name] = arr
    return out


def _outcomes(rec: Record) -> dict[str, tuple[np.ndarray | None, str | None]]:
    """Per metric with per-example values: (the array, when the stored value follows from it by the metric's
    aggregate; else None) and (why not, when the stored value contradicts it; else None)."""
    out: dict[str, tuple[np.ndarray | None, str | None]] = {}
    for name, entry in (rec.get("per_example") or {}).items():
        m = (rec.get("metrics") or {}).get(name)
        if not isinstance(m, dict):
            continue
        try:
            arr = samples.decode(entry)
        except (ValueError, TypeError, AttributeError):
            continue
        value = _value(m)
        if arr.size == 0 or not math.isfinite(value):
            continue
        mean = stats.aggregated(float(np.mean(arr, dtype=np.float64)), aggregate_of(m), sample_scale(m.get("unit", "")))
        if math.isclose(mean, value, rel_tol=2e-3, abs_tol=1e-9):  # float16 storage is within 5e-4
            out[name] = (arr, None)
        else:
            out[name] = (None, f"metrics.{name}.value {value:g} does not follow from its per-example outcomes ({mean:g})")
    return out


def outcome_problems(rec: Record) -> list[str]:
    """Why a record's metric values contradict its own per-example outcomes (a value edited by hand, or a
    record put together from two cells): every record the runner writes has its values follow from them."""
    return [why for _, why in _outcomes(rec).values() if why is not None]


def _clusters(rec: Record, arrays: dict[str, np.ndarray]) -> np.ndarray | None:
    """The record's cluster ids (None: independent examples), one per example of every array.

    Raises:
        UserError: ids that are broken or not one per example (the record names the cell to rerun).
    """
    try:
        ids = samples.clusters_of(rec)
    except ValueError as e:
        raise UserError(str(e)) from None
    bad = sorted(name for name, arr in arrays.items() if ids is not None and arr.size != ids.size)
    if bad:
        raise UserError(
            f"record {rec.get('cell_id')}: dataset.clusters holds {ids.size if ids is not None else 0} "
            f"ids, but {', '.join(bad)} has a different number of examples; rerun the cell"
        )
    return ids


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _rate_distortion(details: dict[str, Any]) -> dict[str, Any]:
    """The whole-model point of ``details["rate_distortion"]``: bits per weight, MSE relative to the
    weights' energy, the Gaussian bound at that point (the record's own ``bound_mse``, else
    variance_ratio · 2^(−2R)) and the variance ratio that draws the curve variance_ratio · 2^(−2R)."""
    model = ((details or {}).get("rate_distortion") or {}).get("model") or {}
    rate, mse, energy = _number(model.get("rate")), _number(model.get("mse")), _number(model.get("energy"))
    ratio, bound = _number(model.get("variance_ratio")), _number(model.get("bound_mse"))
    if rate is None or mse is None or not energy or (ratio is None and bound is None):
        return {}
    limit = bound / energy if bound is not None else ratio * 2.0 ** (-2.0 * rate)
    below = model.get("below_limit")
    below = below if isinstance(below, bool) else mse / energy < limit * (1 - 1e-9)
    # never at GAP_BITS or more (b2s_bench.fitting.belowlimit), whatever the record says: records made
    # before that rule flagged exact fp32 copies (identity cells) as below the limit
    below = bool(below) and gap_applies(rate)
    return {
        "rd_rate": rate,
        "rd_rel_mse": mse / energy,
        "rd_limit": limit,
        "rd_below": below,
        "rd_variance_ratio": ratio if ratio is not None else limit * 2.0 ** (2.0 * rate),
    }


def _weights(rec: Record) -> str | None:
    """The model's weights as cell ids hash them (``fingerprint.model.fingerprint``): a zoo model's
    ``checkpoint`` names its recipe, not the bytes, which can differ between machines."""
    model = (rec.get("fingerprint") or {}).get("model")
    found = model.get("fingerprint") if isinstance(model, dict) else None
    return found if isinstance(found, str) else rec["model"].get("checkpoint")


OPERATING_POINT = "operating point"
UNKNOWN_POINT = "–"


def operating_point_text(pipeline: Sequence[dict[str, Any]]) -> str | None:
    """The leaderboard's "operating point" cell of one record: "defaults" (every stage at its
    compressor's defaults), "changed: bits, sparsity" (the settings the suite changed; in a pipeline
    each stage's keys after its name), "· budget: steps" appended where settings only set a time
    budget; "" for the dense model and None where a record predates the fields."""
    if not pipeline:
        return ""
    if any("changed" not in s for s in pipeline):
        return None
    changed = [(s.get("name", "?"), list(s.get("changed") or [])) for s in pipeline]
    budget = sorted({k for s in pipeline for k in s.get("budget") or []})
    if not any(keys for _, keys in changed):
        text = "defaults"
    elif len(changed) == 1:
        text = "changed: " + ", ".join(changed[0][1])
    else:
        text = "changed: " + "; ".join(f"{name} {', '.join(keys)}" for name, keys in changed if keys)
    return text + (f" · budget: {', '.join(budget)}" if budget else "")


def _row(rec: Record) -> dict[str, Any]:
    size = rec.get("size") or {}
    dataset = rec.get("dataset") or {}
    pipeline = rec.get("compressor", {}).get("pipeline", [])
    error = ((rec.get("error") or {}).get("message") or "").splitlines()
    row: dict[str, Any] = {
        "cell_id": rec["cell_id"],
        "suite": rec.get("suite"),
        "status": rec["status"],
        "model": rec["model"].get("label", rec["model"]["name"]),
        "model_name": rec["model"]["name"],
        "checkpoint": rec["model"].get("checkpoint"),
        "num_classes": rec["model"].get("num_classes"),
        "weights": _weights(rec),
        "dataset": dataset.get("name"),
        "data_fingerprint": dataset.get("data_fingerprint"),
        "examples": dataset.get("examples"),
        "method": rec["label"],
        "seed": rec.get("seed"),
        "compressors": " > ".join(s["name"] for s in pipeline) or "dense",
        "operating_point": operating_point_text(pipeline),
        "defaults_sources": {s["name"]: s["defaults_source"] for s in pipeline if s.get("defaults_source")},
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
        "git_commit": (rec.get("environment") or {}).get("git_commit"),
        "finished_at": rec.get("finished_at"),
        "error_type": (rec.get("error") or {}).get("type"),
        "error": error[0] if error else "",
        "per_example": rec.get("per_example") or {},
    }
    details = rec.get("details") or {}
    # a fit's convergence curve (step, psnr, ...): a pipeline keeps it under the stage that fitted
    curve = details.get("curve") or next(
        (s.get("curve") for s in details.get("stages") or [] if isinstance(s, dict) and s.get("curve")), None
    )
    row["curve"] = curve if isinstance(curve, dict) else {}
    # what a task keeps for a picture of one example (a segmentation mask: details.preview), for reporters
    row["preview"] = details.get("preview") if isinstance(details.get("preview"), dict) else {}
    for name, m in (rec.get("metrics") or {}).items():
        row[f"metric:{name}"] = _value(m)
    arrays = per_example_arrays(rec)
    row["clusters"] = _clusters(rec, arrays)
    for name, arr in arrays.items():
        entry = rec["metrics"][name]
        ci = stats.bootstrap_ci(arr, sample_scale(entry.get("unit", "")), clusters=row["clusters"], aggregate=aggregate_of(entry))
        row[f"ci_lo:{name}"], row[f"ci_hi:{name}"] = ci.lo, ci.hi
    for name, label in (details.get("check_reference") or {}).items():
        row[f"reference:{name}"] = label
    row["status_reason"] = str(details.get("status_reason") or "")
    share = (details.get("coverage") or {}).get("share") if isinstance(details.get("coverage"), dict) else None
    row["coverage"] = float(share) if isinstance(share, (int, float)) else math.nan
    row["caveats"] = [str(c.get("message")) for c in details.get("caveats") or [] if isinstance(c, dict) and c.get("message")]
    row.update(_rate_distortion(details))
    structure = details.get("weight_structure")
    row["weight_structure"] = structure if isinstance(structure, dict) else {}
    return row


def load_frame(
    out_dir: str | os.PathLike[str], only_current: bool = True, dropped: list[tuple[Path, str]] | None = None
) -> tuple[pd.DataFrame, list[MetricMeta], dict[str, Any]]:
    """Rows of every record in a run folder, the metrics' metadata, and the run's report settings.

    Args:
        only_current: keep only the cells of the suite as it was last run (``run.json``), so cells
            of an older version of the suite do not linger in the tables.
        dropped: receives (file, why) for every file in ``cells/`` that is not a valid record, or whose metric
            values contradict its own per-example outcomes (:func:`outcome_problems`: those are left out too).

    Raises:
        UserError: report settings that name a metric the records do not have (see
            :func:`check_settings`).
    """
    out_dir = Path(out_dir)
    # an unreadable run.json is set aside (and named); the report is then made of every record
    run: dict[str, Any] = RunStore(out_dir, warn=lambda msg: print(msg, file=sys.stderr)).manifest() or {}
    records = []
    for rec in iter_records(out_dir, dropped):
        problems = outcome_problems(rec)
        if not problems:
            records.append(rec)
        elif dropped is not None:  # its figures cannot be trusted: named, left out, with the command that redoes it
            cid = rec["cell_id"]
            fix = f"`b2s-bench run {run.get('file') or 'SUITE'} --out {out_dir} --force -k {cid}` recomputes it"
            dropped.append((out_dir / "cells" / f"{cid}.json", "; ".join(problems) + f"; {fix}"))
    if only_current and run.get("cells"):
        order = {cid: i for i, cid in enumerate(run["cells"])}
        records = sorted((r for r in records if r["cell_id"] in order), key=lambda r: order[r["cell_id"]])
    frame = pd.DataFrame([_row(r) for r in records])
    metas = metric_meta(records, run.get("metrics"))
    settings = {"suite": run.get("suite", out_dir.name), **(run.get("report") or {})}
    if metas:  # records without any metric (every cell failed) cannot contradict the settings: the report lists them
        check_settings(metas, settings)
    return frame, metas, settings


def metric_meta(records: Sequence[Record], order: Sequence[str] | None = None) -> list[MetricMeta]:
    """Each metric's metadata as its records stored it, in suite order, then by name."""
    found: dict[str, MetricMeta] = {}
    for rec in records:
        for name, m in (rec.get("metrics") or {}).items():
            if name not in found:
                entry: dict[str, Any] = dict(m)
                found[name] = MetricMeta(
                    name,
                    str(entry.get("unit", "")),
                    bool(entry.get("higher_is_better", True)),
                    str(entry.get("kind", "quality")),
                    tuple(entry.get("roles", ())),
                    int(entry.get("rank", 100)),
                    entry.get("identity_target"),
                    str(entry.get("description", "")),
                    aggregate_of(entry),
                )
    names = [n for n in (order or []) if n in found] + sorted(n for n in found if n not in (order or []))
    return [found[n] for n in names]


def check_settings(metas: Sequence[MetricMeta], settings: dict[str, Any]) -> None:
    """Report settings must name metrics the records have.

    Raises:
        UserError: ``report.primary`` or ``report.sort_by`` is not one of the run's metrics.
    """
    names = [m.name for m in metas]
    for key in ("primary", "sort_by"):
        value = settings.get(key)
        if value and value not in names:
            raise UserError(
                f"report.{key}: {value!r} is not one of this run's metrics {names}; "
                f"add it to the suite's metrics or pick one of those"
            )


def shows_megabytes(meta: MetricMeta) -> bool:
    """Only a size metric counted in bits is shown as a stored size in MB."""
    return meta.unit == "bits" and meta.kind == "size"


def header(meta: MetricMeta) -> str:
    arrow = "↑" if meta.higher_is_better else "↓"
    if shows_megabytes(meta):
        return f"size [MB] {arrow}"
    unit = f" [{meta.unit}]" if meta.unit else ""
    return f"{meta.name}{unit} {arrow}"


def ci_column(meta: MetricMeta) -> str:
    return f"{meta.name} 95% CI"


def primary_metric(metas: Sequence[MetricMeta], preferred: str | None = None) -> MetricMeta | None:
    """The quality metric of Pareto plots and equal-bits comparisons: ``preferred`` (the suite's
    ``report.primary``), else the best-ranked metric registered with the "primary" role, else the
    first quality metric.

    Raises:
        UserError: ``preferred`` is not one of ``metas``.
    """
    by_name = {m.name: m for m in metas}
    if not metas:  # no record has a metric (every cell failed): nothing to rank by, nothing to contradict
        return None
    if preferred:
        if preferred not in by_name:
            raise UserError(f"report.primary: {preferred!r} is not one of this run's metrics {sorted(by_name)}")
        return by_name[preferred]
    primary = sorted((m for m in metas if "primary" in m.roles), key=lambda m: (m.rank, m.name))
    if primary:
        return primary[0]
    quality = [m for m in metas if m.kind == "quality"]
    return quality[0] if quality else None


def _display_value(meta: MetricMeta, value: float) -> float:
    return value / BITS_PER_MB if shows_megabytes(meta) else value


def _pooled(group: pd.DataFrame, name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-example outcomes of a method: (one seed's as stored, several seeds' averaged per example;
    the seeds x examples array). (None, None) unless every seed stores them for the same examples."""
    if f"ci_lo:{name}" not in group or group[f"ci_lo:{name}"].isna().any():
        return None, None
    arrays = [samples.decode(pe[name]) for pe in group["per_example"]]
    if len({a.size for a in arrays}) != 1:
        return None, None
    runs = np.stack(arrays)
    return (arrays[0] if len(arrays) == 1 else np.mean(runs.astype(np.float64), axis=0)), runs


def _group_clusters(group: pd.DataFrame) -> tuple[bool, np.ndarray | None]:
    """(whether the seeds agree on their clusters, those cluster ids or None for independent
    examples). A seed whose record predates clusters takes the others' (same data, same views)."""
    found = [c for c in (group["clusters"] if "clusters" in group else []) if isinstance(c, np.ndarray)]
    if any(c.size != found[0].size or not np.array_equal(c, found[0]) for c in found[1:]):
        return False, None
    return True, (found[0] if found else None)


def _mean(values: pd.Series) -> float:
    return float(pd.to_numeric(values, errors="coerce").mean())


def _method_row(group: pd.DataFrame, metas: Sequence[MetricMeta]) -> dict[str, Any]:
    first = group.iloc[0]
    fps = set(group["data_fingerprint"].dropna())
    row: dict[str, Any] = {
        k: first.get(k)
        for k in ("model", "dataset", "method", "family", "track", "compressors", "identity", "num_classes", "examples")
    }
    points = {p for p in group.get("operating_point", pd.Series(dtype=object)) if isinstance(p, str)}
    # the seeds of one method share their settings; records without the fields leave it unknown
    row["operating_point"] = points.pop() if len(points) == 1 else (None if not points else " / ".join(sorted(points)))
    row.update(
        dense=first["compressors"] == "dense",
        seeds=len(group),
        cells=list(group["cell_id"]),
        data_fingerprint=fps.pop() if len(fps) == 1 else None,
        total_bits=_mean(group["total_bits"]),
        ratio_model=_mean(group["ratio_model"]),
        ratio_layers=_mean(group["ratio_layers"]),
        caveats=sorted({c for cs in group.get("caveats", pd.Series(dtype=object)) for c in cs or []}),
    )
    agree, clusters = _group_clusters(group)
    row["clusters"] = clusters
    for meta in metas:
        col = f"metric:{meta.name}"
        mean, std = stats.mean_std(group[col]) if col in group else (math.nan, math.nan)
        arr, runs = _pooled(group, meta.name) if agree else (None, None)
        if runs is not None and clusters is not None and runs.shape[1] != clusters.size:
            arr = runs = None
        row[col], row[f"std:{meta.name}"], row[f"samples:{meta.name}"] = mean, std, arr
        row[f"runs:{meta.name}"] = runs
        if arr is not None and len(group) == 1:
            row[f"ci_lo:{meta.name}"], row[f"ci_hi:{meta.name}"] = first[f"ci_lo:{meta.name}"], first[f"ci_hi:{meta.name}"]
        elif runs is not None:
            # several seeds: seeds and clusters resampled (two levels), not only examples
            ci = stats.pooled_ci(runs, clusters, sample_scale(meta.unit), aggregate=meta.aggregate)
            row[f"ci_lo:{meta.name}"], row[f"ci_hi:{meta.name}"] = ci.lo, ci.hi
        else:
            row[f"ci_lo:{meta.name}"] = row[f"ci_hi:{meta.name}"] = math.nan
        refs = sorted({str(v) for v in group.get(f"reference:{meta.name}", pd.Series(dtype=object)).dropna()})
        row[f"reference:{meta.name}"] = " + ".join(refs) if refs else None
    for key in ("rd_rate", "rd_rel_mse", "rd_limit", "rd_variance_ratio"):
        row[key] = float(group[key].mean()) if key in group and group[key].notna().any() else math.nan
    row["rd_below"] = bool(group["rd_below"].fillna(False).astype(bool).any()) if "rd_below" in group else False
    return row


def methods(frame: pd.DataFrame, metas: Sequence[MetricMeta]) -> pd.DataFrame:
    """One row per method of each (model, dataset): its ok cells pooled over seeds.

    Columns: model, dataset, method, family, track, compressors, identity, dense, seeds, cells,
    failed (the method's cells that failed), data_fingerprint, num_classes, total_bits, ratio_model,
    ratio_layers (means), clusters (each example's cluster id, or None for independent examples),
    and per metric ``metric:NAME`` (mean across seeds), ``std:NAME`` (sample std across seeds, NaN
    for one seed), ``ci_lo:NAME`` and ``ci_hi:NAME`` (95 % bootstrap interval resampling clusters
    of examples and, with several seeds, the seeds: :func:`b2s_bench.reporting.stats.pooled_ci`),
    ``samples:NAME`` (per-example values, averaged over seeds, or None), ``runs:NAME`` (seeds x
    examples, or None) and ``reference:NAME`` (what a check compared against); ``rd_*``
    rate-distortion facts.
    """
    if frame.empty or "status" not in frame:
        return pd.DataFrame()
    ok = frame[frame["status"] == "ok"]
    keys = ["model", "dataset", "method"]
    failed = Counter(_key(k) for k in frame.loc[frame["status"] != "ok", keys].itertuples(index=False))
    rows = [{**_method_row(g, metas), "failed": failed[_key(k)]} for k, g in ok.groupby(keys, dropna=False, sort=True)]
    return pd.DataFrame(rows)


def _key(values: Any) -> tuple[Any, ...]:
    """A group key with NaN as None (NaN never equals itself: a record without a dataset)."""
    return tuple(None if isinstance(v, float) and math.isnan(v) else v for v in values)


def _shown(meta: MetricMeta, table: pd.DataFrame, primary: MetricMeta | None) -> tuple[bool, bool]:
    """(show a ± std column, show an interval column) for one metric in one table."""
    several = bool((table["seeds"] > 1).any()) and meta.kind in ("quality", "weights")
    has_ci = bool(table[f"ci_lo:{meta.name}"].notna().any())
    return several, has_ci or (primary is not None and meta.name == primary.name)


def _interval(lo: float, hi: float) -> tuple[float, float] | None:
    return None if math.isnan(lo) else (float(lo), float(hi))


def _display_row(
    r: pd.Series, metas: Sequence[MetricMeta], shown: dict[str, tuple[bool, bool]], base: pd.Series | None, with_seeds: bool
) -> dict[str, Any]:
    mark = f" {CAVEAT_MARK}" if r.get("caveats") else ""
    row: dict[str, Any] = {"method": f"{r['method']}{mark}", "family": r["family"], "track": r["track"]}
    point = r.get("operating_point")
    row[OPERATING_POINT] = "" if r["dense"] else (point if isinstance(point, str) else UNKNOWN_POINT)
    if with_seeds:
        row["seeds"] = int(r["seeds"])
    for meta in metas:
        if "check" in meta.roles:  # theory checks have their own section
            continue
        col = f"metric:{meta.name}"
        row[header(meta)] = _display_value(meta, r[col])
        std_col, ci_col = shown[meta.name]
        if std_col:
            row[f"± {meta.name}"] = _display_value(meta, r[f"std:{meta.name}"])
        if ci_col:
            row[ci_column(meta)] = _interval(r[f"ci_lo:{meta.name}"], r[f"ci_hi:{meta.name}"])
        if meta.kind == "quality" and base is not None:
            row[f"Δ {meta.name}"] = r[col] - base[col] if not r["dense"] else math.nan
    row["cell"] = ", ".join(r["cells"])
    return row


def _sort_keys(table: pd.DataFrame, metas: Sequence[MetricMeta], settings: dict[str, Any]) -> pd.DataFrame:
    keys, asc = ["_dense"], [False]
    table = table.assign(
        _dense=table["dense"],
        _track=[TRACKS.index(t) if t in TRACKS else 99 for t in table["track"]],
        _family=table["family"].fillna(""),
        _sort=0.0,
    )
    sort_by = settings.get("sort_by")
    meta = next((m for m in metas if m.name == sort_by), None)
    if meta is not None:
        v = table[f"metric:{meta.name}"]
        table["_sort"] = -v if meta.higher_is_better else v
    group_by = settings.get("group_by", "track")
    if group_by in ("track", "family"):
        keys.append(f"_{group_by}")
        asc.append(True)
    return table.sort_values([*keys, "_sort", "method"], ascending=[*asc, True, True], na_position="last", kind="mergesort")


def leaderboards(
    frame: pd.DataFrame, metas: Sequence[MetricMeta], settings: dict[str, Any], table: pd.DataFrame | None = None
) -> list[tuple[str, pd.DataFrame]]:
    """One display table per (model, dataset): one row per method (seeds pooled), dense first.

    Sorting: by data track (when grouped by track), then ``sort_by`` in its better direction,
    then method name, so the order is the same on every rebuild. Interval columns hold
    ``(lo, hi)`` tuples, or None where the records store no per-example outcomes.

    Args:
        table: ``methods(frame, metas)`` when the caller has it already.
    """
    table_all = methods(frame, metas) if table is None else table
    if table_all.empty:
        return []
    primary = primary_metric(metas, settings.get("primary"))
    tables = []
    for (model, dataset), group in table_all.groupby(["model", "dataset"], dropna=False, sort=True):
        group = _sort_keys(group, metas, settings)
        dense = group[group["dense"]]
        base = dense.iloc[0] if len(dense) else None
        shown = {m.name: _shown(m, group, primary) for m in metas}
        with_seeds = bool((group["seeds"] > 1).any())
        rows = [_display_row(r, metas, shown, base, with_seeds) for _, r in group.iterrows()]
        table = pd.DataFrame(rows)
        if all(p in ("", UNKNOWN_POINT) for p in table[OPERATING_POINT]):  # records older than the field: no column
            table = table.drop(columns=[OPERATING_POINT])
        if group["rd_below"].any():
            table["note"] = [BELOW_LIMIT if b else "" for b in group["rd_below"]]
        title = f"{model} on {dataset}" if isinstance(dataset, str) else str(model)
        tables.append((title, table.reset_index(drop=True)))
    return tables


def failures(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or "status" not in frame:
        return pd.DataFrame(columns=["model", "method", "error", "cell"])
    bad = frame[frame["status"] == "error"]
    table = pd.DataFrame(
        {
            "model": bad["model"],
            "method": bad["method"],
            "error": bad["error_type"].fillna("") + ": " + bad["error"].fillna(""),
            "cell": bad["cell_id"],
        }
    )
    return table.sort_values(["model", "method", "cell"], kind="mergesort").reset_index(drop=True)


def not_applicable(frame: pd.DataFrame) -> pd.DataFrame:
    """The cells that are ``not-applicable`` or ``short-of-target``, with why (kept out of rankings)."""
    columns = ["model", "method", "status", "reason", "coverage [%]", "ratio", "cell"]
    if frame.empty or "status" not in frame:
        return pd.DataFrame(columns=columns)
    rows = frame[frame["status"].isin(SKIPPED_STATUSES)]
    table = pd.DataFrame(
        {
            "model": rows["model"],
            "method": rows["method"],
            "status": rows["status"],
            "reason": rows.get("status_reason", pd.Series("", index=rows.index)).fillna(""),
            "coverage [%]": 100 * pd.to_numeric(rows.get("coverage", pd.Series(math.nan, index=rows.index)), errors="coerce"),
            "ratio": pd.to_numeric(rows["ratio_model"], errors="coerce"),
            "cell": rows["cell_id"],
        },
        columns=columns,
    )
    return table.sort_values(["model", "method", "cell"], kind="mergesort").reset_index(drop=True)


def caveat_notes(frame: pd.DataFrame) -> list[str]:
    """One footnote per (model, method, message) of the ok cells with caveats, the rows marked
    :data:`CAVEAT_MARK` in the leaderboards."""
    if frame.empty or "caveats" not in frame:
        return []
    notes = {
        f"{CAVEAT_MARK} {r['model']} · {r['method']}: {msg}"
        for _, r in frame[frame["status"] == "ok"].iterrows()
        for msg in r["caveats"] or []
    }
    return sorted(notes)


def operating_point_note(frame: pd.DataFrame) -> list[str]:
    """What the leaderboards' "operating point" column means, then one line per compressor in the ok
    records with where its defaults come from (``CompressorSpec.defaults_source``); [] without any."""
    if frame.empty or "defaults_sources" not in frame:
        return []
    sources: dict[str, str] = {}
    for found in frame.loc[frame["status"] == "ok", "defaults_sources"]:
        sources.update(found if isinstance(found, dict) else {})
    if not sources:
        return []
    lead = (
        'Operating point: "defaults" when a method ran at its compressor\'s defaults, else the settings the '
        'suite changed; "budget" lists settings that only set a time budget (step counts for a device); '
        f"{UNKNOWN_POINT} where the records predate these fields. Where the defaults come from:"
    )
    return [lead, *(f"{name}: {sources[name]}" for name in sorted(sources))]


def stats_note() -> str:
    """How the intervals and verdicts of every report are computed (printed with the tables)."""
    return (
        f"95 % CI: percentile bootstrap ({stats.RESAMPLES} resamples, numpy seed {stats.SEED}) that "
        "resamples clusters of examples where the records name them (the views of one photo), else "
        "examples; with several seeds, also the seeds (a two-level bootstrap), and ± is the standard "
        "deviation across seeds. – : the records store no per-example outcomes. Verdicts follow one "
        "rule: the paired 95 % CI of the difference on the same examples decides (better only when it "
        'excludes 0, "not significant" exactly when it covers 0; McNemar\'s exact p is a secondary '
        'figure for one seed of independent examples); "inconclusive" when a method had failed cells '
        f'or several seeds but fewer than {stats.MIN_SEEDS}; "both fail" when each method\'s CI reaches down to '
        "chance (100 / classes where recorded) or to 10 % of the dense model's value."
    )
