"""Checks of the theory's claims, built from records alone.

- identity: settings that should reproduce the dense model (32-bit, 0 % pruning, full rank) do, by
  every metric that declares an ``identity_target``;
- checks registered as metrics with the "check" role (for example the generic gradient solver
  against a family's closed form);
- Pareto fronts: which cells are not beaten in both stored bits and the primary metric;
- equal bits: cells of different families within a few percent of each other's stored bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from .report import BITS_PER_MB, MetricMeta, primary_metric

__all__ = ["identity_checks", "check_sections", "pareto_front", "equal_bits", "theory_sections"]



def identity_checks(frame: pd.DataFrame, metas: Sequence[MetricMeta]) -> pd.DataFrame:
    """Identity settings against every metric that declares an ``identity_target``."""
    rows = []
    if "identity" not in frame:
        return pd.DataFrame(rows)
    targets = [m for m in metas if m.identity_target is not None]
    for _, r in frame[(frame["identity"] == True) & (frame["status"] == "ok")].iterrows():  # noqa: E712
        row: dict[str, object] = {"model": r["model"], "method": r["method"]}
        checks = []
        for m in targets:
            value = r.get(f"metric:{m.name}", math.nan)
            row[m.name] = value
            if not math.isnan(value):
                checks.append(value >= m.identity_target if m.higher_is_better else value <= m.identity_target)
        names = " or ".join(m.name for m in targets) or "a metric with an identity target"
        row["verdict"] = f"n/a (add {names})" if not checks else ("PASS" if all(checks) else "FAIL")
        rows.append(row)
    return pd.DataFrame(rows)


def check_sections(frame: pd.DataFrame, metas: Sequence[MetricMeta]) -> list[tuple[str, pd.DataFrame]]:
    """One table per metric registered with the "check" role (e.g. the generic solver's gap)."""
    sections = []
    for m in metas:
        col = f"metric:{m.name}"
        if "check" not in m.roles or col not in frame:
            continue
        ok = frame[(frame["status"] == "ok") & frame[col].notna()]
        if ok.empty:
            continue
        sections.append((f"{m.name}: {m.description}" if m.description else m.name, pd.DataFrame({
            "model": ok["model"], "method": ok["method"], "family": ok["family"], m.name: ok[col],
        }).reset_index(drop=True)))
    return sections


def pareto_front(points: pd.DataFrame, y: str, higher_is_better: bool = True) -> pd.Series:
    """Boolean mask of rows not dominated in (fewer total_bits, better y)."""
    sign = 1.0 if higher_is_better else -1.0
    mask = []
    for i, r in points.iterrows():
        dominated = False
        for j, o in points.iterrows():
            if i == j:
                continue
            better_or_eq = o["total_bits"] <= r["total_bits"] and sign * o[y] >= sign * r[y]
            strictly = o["total_bits"] < r["total_bits"] or sign * o[y] > sign * r[y]
            if better_or_eq and strictly:
                dominated = True
                break
        mask.append(not dominated)
    return pd.Series(mask, index=points.index)


def equal_bits(frame: pd.DataFrame, metric: MetricMeta, tolerance: float = 0.05) -> pd.DataFrame:
    """Pairs of cells from different families whose stored bits differ by at most ``tolerance``."""
    col = f"metric:{metric.name}"
    ok = frame[(frame["status"] == "ok") & (frame["compressors"] != "dense") & (frame["identity"] != True)]  # noqa: E712
    if col not in ok:
        return pd.DataFrame()
    rows = []
    for model, group in ok.groupby("model", sort=True):
        g = group.dropna(subset=[col, "total_bits"]).sort_values(["total_bits", "method"], kind="mergesort")
        recs = g.to_dict("records")
        for a_i, a in enumerate(recs):
            for b in recs[a_i + 1:]:
                if a["family"] == b["family"]:
                    continue
                gap = abs(a["total_bits"] - b["total_bits"]) / max(a["total_bits"], b["total_bits"])
                if gap <= tolerance:
                    va, vb = a[col], b[col]
                    better = a["method"] if (va > vb) == metric.higher_is_better else b["method"]
                    rows.append({"model": model, "A": a["method"], "B": b["method"],
                                 "size A [MB]": a["total_bits"] / BITS_PER_MB, "size B [MB]": b["total_bits"] / BITS_PER_MB,
                                 f"{metric.name} A": va, f"{metric.name} B": vb,
                                 "better": better if va != vb else "tie"})
    return pd.DataFrame(rows)


def theory_sections(
    frame: pd.DataFrame, metas: Sequence[MetricMeta], preferred: str | None = None
) -> list[tuple[str, pd.DataFrame]]:
    sections = []
    if frame.empty:
        return sections
    ident = identity_checks(frame, metas)
    if not ident.empty:
        sections.append(("Identity settings reproduce the dense model", ident))
    sections += check_sections(frame, metas)
    metric = primary_metric(metas, preferred)
    if metric is not None and f"metric:{metric.name}" in frame:
        ok = frame[(frame["status"] == "ok")].dropna(subset=[f"metric:{metric.name}", "total_bits"])
        fronts = []
        for model, group in ok.groupby("model", sort=True):
            mask = pareto_front(group, f"metric:{metric.name}", metric.higher_is_better)
            front = group[mask].sort_values("total_bits", kind="mergesort")
            for _, r in front.iterrows():
                fronts.append({"model": model, "method": r["method"], "family": r["family"], "track": r["track"],
                               "size [MB]": r["total_bits"] / BITS_PER_MB, metric.name: r[f"metric:{metric.name}"]})
        if fronts:
            sections.append((f"Pareto front: {metric.name} against stored bits", pd.DataFrame(fronts)))
        eq = equal_bits(frame, metric)
        if not eq.empty:
            sections.append(("Comparisons at equal bits (within 5 %)", eq))
    return sections
