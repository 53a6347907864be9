"""Checks of the theory's claims, built from records alone.

- identity: settings that should reproduce the dense model (32-bit, 0 % pruning, full rank) do, by
  every metric that declares an ``identity_target``;
- checks registered as metrics with the "check" role (for example the generic gradient solver
  against a family's closed form, or against a local search's own code), labelled by what they
  compared against (``details["check_reference"]``);
- Pareto fronts: which methods are not beaten in both stored bits and the primary metric;
- equal bits: every pair of different methods within a few percent of each other's stored bits,
  with a verdict from the paired interval of their difference on the same examples, resampling
  clusters of examples and seeds (:func:`b2s_bench.reporting.stats.pooled_paired`, :func:`b2s_bench.reporting.stats.verdict`);
- the weight error against the i.i.d. Gaussian rate-distortion limit, where records carry it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..fitting.belowlimit import gap_applies
from . import stats
from .tables import BELOW_LIMIT, BITS_PER_MB, MetricMeta, methods, primary_metric, sample_scale

__all__ = [
    "identity_checks",
    "check_sections",
    "pareto_front",
    "equal_bits",
    "theory_sections",
    "failure_level",
    "fails",
    "compare_pair",
    "shared_clusters",
    "reliable",
    "rate_distortion_table",
    "SECTION_NOTES",
    "EQUAL_BITS",
    "RATE_DISTORTION",
    "WEIGHT_STRUCTURE",
    "weight_structure_table",
]

EQUAL_BITS = "Comparisons at equal bits (within 5 %)"
RATE_DISTORTION = "Weight error against the Gaussian rate–distortion limit"
WEIGHT_STRUCTURE = "Weight structure of the dense model, per tensor"
#: a note the writers print under a section's title
SECTION_NOTES = {
    EQUAL_BITS: "Every pair of different methods (of any families) whose stored sizes are within 5 %. "
    "One rule: the paired 95 % CI of Δ on the same examples (resampling clusters of examples "
    'and each method\'s seeds) decides: "better" only where it excludes 0, "not significant" '
    "where it covers 0; McNemar's exact p is a secondary figure (one seed each, independent "
    'examples); "inconclusive" where a method had failed cells or several seeds but fewer '
    f'than {stats.MIN_SEEDS}; "both fail" where both are at chance level.',
    RATE_DISTORTION: f"{BELOW_LIMIT}: the weight error is below D(R) = σ²/E · 2^(−2R), the least error an "
    "i.i.d. Gaussian source of the same variance can have at R stored bits per coded weight (the "
    "coded tensors' bits over their scalars, not the whole model's bits per weight). A result "
    "below it has one of three causes: the weights are structured (correlated or low rank) and "
    "the method exploits that structure; the weights are not Gaussian (an i.i.d. Laplacian "
    "source may sit up to 0.63 dB below; heavier tails further); or the size is miscounted. "
    "Check which. The gap is n/a at 16 bits per coded weight or more, where the bound is far "
    "below any real storage.",
    WEIGHT_STRUCTURE: "What a code could exploit beyond an i.i.d. model, and outlier channels a fixed grid pays "
    "for, of each original tensor (the records' details.weight_structure): the effective rank at 90 % of the "
    "energy (how many singular values hold it), neighbour autocorrelation along rows and columns, the largest "
    "column and row L2 norm over the median one (about 1.1 to 2 for i.i.d. weights), and the share of "
    "channels above 6× their median (large language models' weights have a few).",
}


def identity_checks(frame: pd.DataFrame, metas: Sequence[MetricMeta]) -> pd.DataFrame:
    """Identity settings against every metric that declares an ``identity_target``."""
    rows: list[dict[str, Any]] = []
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
    """One table per metric registered with the "check" role (e.g. the generic solver's gap), with a
    "reference" column where the records say what each check compared against."""
    sections = []
    for m in metas:
        col = f"metric:{m.name}"
        if "check" not in m.roles or col not in frame:
            continue
        ok = frame[(frame["status"] == "ok") & frame[col].notna()]
        if ok.empty:
            continue
        table = pd.DataFrame({"model": ok["model"], "method": ok["method"], "family": ok["family"]})
        ref = f"reference:{m.name}"
        if ref in ok and ok[ref].notna().any():
            table["reference"] = ok[ref].fillna("–")
        table[m.name] = ok[col]
        sections.append((f"{m.name}: {m.description}" if m.description else m.name, table.reset_index(drop=True)))
    return sections


def pareto_front(points: pd.DataFrame, y: str, higher_is_better: bool = True) -> pd.Series:
    """Boolean mask of rows not dominated in (fewer total_bits, better y)."""
    bits = points["total_bits"].to_numpy(dtype=float)
    vals = points[y].to_numpy(dtype=float) * (1.0 if higher_is_better else -1.0)
    mask = []
    for i in range(len(points)):
        no_worse = (bits <= bits[i]) & (vals >= vals[i])
        better = (bits < bits[i]) | (vals > vals[i])
        mask.append(not bool((no_worse & better).any()))
    return pd.Series(mask, index=points.index)


def failure_level(row: pd.Series | dict[str, Any], dense: pd.Series | dict[str, Any] | None, metric: MetricMeta) -> float:
    """The value at or below which a method of this metric "fails": the higher of chance
    (100 / classes, for a % metric whose record gives the number of classes) and 10 % of the
    dense model's value; NaN for lower-is-better metrics, which have no chance level here.

    Chance is the hit rate of guessing one of the classes, so it applies to right/wrong outcomes per
    example (top-1, agreement) or to a metric whose records keep no outcomes; a score per example (the
    mIoU or Dice of each image, whose model may have 1 output channel) has only the dense model's level.
    """
    if not metric.higher_is_better:
        return math.nan
    levels = []
    classes = row.get("num_classes")
    runs = row.get(f"runs:{metric.name}")
    scores = isinstance(runs, np.ndarray) and runs.dtype != np.bool_
    if metric.unit == "%" and isinstance(classes, (int, float)) and classes and classes > 0 and not scores:
        levels.append(100.0 / float(classes))
    base = math.nan if dense is None else float(dense.get(f"metric:{metric.name}", math.nan))
    if math.isfinite(base):
        levels.append(0.1 * base)
    return max(levels) if levels else math.nan


def fails(row: pd.Series | dict[str, Any], level: float, metric: MetricMeta) -> bool:
    """Whether the method cannot be told apart from failure: the low end of its 95 % interval (its
    value, without one) is at or below ``level``."""
    if math.isnan(level):
        return False
    lo = row.get(f"ci_lo:{metric.name}", math.nan)
    value = lo if isinstance(lo, float) and math.isfinite(lo) else row.get(f"metric:{metric.name}", math.nan)
    return bool(value <= level)


def _as_clusters(value: Any) -> np.ndarray | None:
    return value if isinstance(value, np.ndarray) else None


def _runs(row: pd.Series | dict[str, Any], name: str) -> np.ndarray | None:
    """Seeds x examples of a method (a 1-D ``samples:`` array is one seed, for tables built by hand)."""
    runs = row.get(f"runs:{name}")
    if runs is None:
        runs = row.get(f"samples:{name}")
    return None if runs is None else np.atleast_2d(np.asarray(runs))


def shared_clusters(a: pd.Series | dict[str, Any], b: pd.Series | dict[str, Any], name: str) -> tuple[bool, np.ndarray | None]:
    """(whether two methods' outcomes are on the same examples, their cluster ids or None).

    The same examples: the same number and data fingerprint (a record without one: same table,
    same count) and no conflicting cluster ids. A method whose records predate cluster ids takes
    the other's (the same data has the same clusters)."""
    xa, xb = _runs(a, name), _runs(b, name)
    if xa is None or xb is None or xa.shape[1] != xb.shape[1]:
        return False, None
    fa, fb = a.get("data_fingerprint"), b.get("data_fingerprint")
    if not (fa == fb or fa is None or fb is None):
        return False, None
    ca, cb = _as_clusters(a.get("clusters")), _as_clusters(b.get("clusters"))
    if ca is not None and cb is not None and not np.array_equal(ca, cb):
        return False, None
    clusters = ca if ca is not None else cb
    return (clusters is None or clusters.size == xa.shape[1]), clusters


def compare_pair(
    a: pd.Series | dict[str, Any], b: pd.Series | dict[str, Any], metric: MetricMeta
) -> tuple[str, stats.Paired | None, float]:
    """The paired difference ``b − a`` on the same examples: (how its interval was drawn, the
    result in the metric's units, McNemar's exact p), or ("–", None, NaN) where they have no
    per-example outcomes on the same examples.

    The interval resamples the clusters of examples (where the records name them) and each
    method's seeds (:func:`b2s_bench.reporting.stats.pooled_paired`); it alone decides the verdict.
    McNemar's p is a secondary figure, NaN unless both are right/wrong outcomes of one seed on
    independent examples (its assumptions)."""
    same, clusters = shared_clusters(a, b, metric.name)
    if not same:
        return "–", None, math.nan
    xa, xb = _runs(a, metric.name), _runs(b, metric.name)
    assert xa is not None and xb is not None  # shared_clusters checked them
    result = stats.pooled_paired(xa, xb, clusters, sample_scale(metric.unit), aggregate=metric.aggregate)
    several = xa.shape[0] > 1 or xb.shape[0] > 1
    how = "paired bootstrap" + (" over clusters" if clusters is not None else "") + (" and seeds" if several else "")
    mcnemar = math.nan
    if not several and clusters is None and xa.dtype == bool and xb.dtype == bool:
        mcnemar = stats.mcnemar_exact(xa[0], xb[0]).p
    return how, result, mcnemar


def reliable(row: pd.Series | dict[str, Any]) -> bool:
    """Whether a method's cells can carry a verdict: none failed, and a method run with several
    seeds (so a stochastic one: suites repeat only those) has :data:`b2s_bench.reporting.stats.MIN_SEEDS`."""
    seeds = int(row.get("seeds", 1) or 1)
    return int(row.get("failed", 0) or 0) == 0 and stats.enough_seeds(seeds, stochastic=seeds > 1)


def _verdict(
    a: dict[str, Any], b: dict[str, Any], metric: MetricMeta, dense: pd.Series | None, result: stats.Paired | None
) -> str:
    if fails(a, failure_level(a, dense, metric), metric) and fails(b, failure_level(b, dense, metric), metric):
        return "both fail"
    word = stats.verdict(result, metric.higher_is_better, reliable=reliable(a) and reliable(b))
    if word == stats.SUPPORTED:
        return f"{b['method']} better"
    if word == stats.REFUTED:
        return f"{a['method']} better"
    return word


def equal_bits(
    frame: pd.DataFrame, metric: MetricMeta, tolerance: float = 0.05, table: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Pairs of different methods (any families; seeds pooled) whose stored bits differ by at most
    ``tolerance``, each with the paired interval of the difference, McNemar's p where it applies
    and a verdict by :func:`b2s_bench.reporting.stats.verdict` (``table``: ``methods(frame, ...)`` with this
    metric, when the caller has it)."""
    table = methods(frame, [metric]) if table is None else table
    col = f"metric:{metric.name}"
    if table.empty or col not in table:
        return pd.DataFrame()
    rows = []
    for model, group in table.groupby("model", sort=True):
        dense = group[group["dense"]]
        base = dense.iloc[0] if len(dense) else None
        cand = group[~group["dense"] & (group["identity"] != True)].dropna(subset=[col, "total_bits"])  # noqa: E712
        recs = cand.sort_values(["total_bits", "method"], kind="mergesort").to_dict("records")
        for i, a in enumerate(recs):
            for b in recs[i + 1 :]:
                if abs(a["total_bits"] - b["total_bits"]) > tolerance * max(a["total_bits"], b["total_bits"]):
                    continue
                test, result, mcnemar = compare_pair(a, b, metric)
                rows.append(
                    {
                        "model": model,
                        "A": a["method"],
                        "B": b["method"],
                        "size A [MB]": a["total_bits"] / BITS_PER_MB,
                        "size B [MB]": b["total_bits"] / BITS_PER_MB,
                        f"{metric.name} A": a[col],
                        f"{metric.name} B": b[col],
                        f"Δ {metric.name} (B − A)": b[col] - a[col],
                        "95% CI of Δ": None if result is None else (result.lo, result.hi),
                        "test": test,
                        "McNemar p": mcnemar,
                        "verdict": _verdict(a, b, metric, base, result),
                    }
                )
    return pd.DataFrame(rows)


def rate_distortion_table(frame: pd.DataFrame, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each method's weight error against the Gaussian limit at its rate, in dB (10·log10 of the
    MSE relative to the weights' energy), over the coded tensors at their bits per coded weight; a
    negative gap is below the limit and flagged; the gap is None at 16 bits per coded weight or more."""
    table = methods(frame, []) if table is None else table
    if table.empty or "rd_rate" not in table or table["rd_rate"].isna().all():
        return pd.DataFrame()
    rows = []
    for _, r in table.dropna(subset=["rd_rate", "rd_rel_mse", "rd_limit"]).iterrows():
        err = 10 * math.log10(r["rd_rel_mse"]) if r["rd_rel_mse"] > 0 else -math.inf
        limit = 10 * math.log10(r["rd_limit"]) if r["rd_limit"] > 0 else -math.inf
        # no gap at GAP_BITS or more (an fp32 INR was "117 dB" from a −130 dB bound: no meaning)
        gap = err - limit if gap_applies(r["rd_rate"]) else None
        rows.append(
            {
                "model": r["model"],
                "method": r["method"],
                "family": r["family"],
                "bits/coded weight": r["rd_rate"],
                "weight error [dB]": err,
                "limit [dB]": limit,
                "gap [dB]": gap,
                "flag": BELOW_LIMIT if r["rd_below"] else "",
            }
        )
    return pd.DataFrame(rows)


def weight_structure_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model, each original tensor's structure and outlier channels, from the first record that has
    them (every cell of a model describes the same tensors); records made before outliers were measured
    give no rows."""
    if "weight_structure" not in frame:
        return pd.DataFrame()
    rows = []
    for model, group in frame.groupby("model", sort=True):
        found = next(
            (s for s in group["weight_structure"] if isinstance(s, dict) and any("outlier_share" in v for v in s.values())),
            None,
        )
        for tensor, v in (found or {}).items():
            rows.append(
                {
                    "model": model,
                    "tensor": tensor,
                    "effective rank 90 %": v.get("effective_rank_90"),
                    "autocorr rows": v.get("autocorr_rows"),
                    "autocorr cols": v.get("autocorr_cols"),
                    "max/median col norm": v.get("outlier_ratio_cols"),
                    "max/median row norm": v.get("outlier_ratio_rows"),
                    "outlier channels [%]": 100.0 * float(v.get("outlier_share", math.nan)),
                }
            )
    return pd.DataFrame(rows)


def _pareto_section(table: pd.DataFrame, metric: MetricMeta) -> pd.DataFrame:
    table = table.dropna(subset=[f"metric:{metric.name}", "total_bits"])
    fronts = []
    for model, group in table.groupby("model", sort=True):
        mask = pareto_front(group, f"metric:{metric.name}", metric.higher_is_better)
        for _, r in group[mask].sort_values("total_bits", kind="mergesort").iterrows():
            fronts.append(
                {
                    "model": model,
                    "method": r["method"],
                    "family": r["family"],
                    "track": r["track"],
                    "size [MB]": r["total_bits"] / BITS_PER_MB,
                    metric.name: r[f"metric:{metric.name}"],
                }
            )
    return pd.DataFrame(fronts)


def theory_sections(
    frame: pd.DataFrame,
    metas: Sequence[MetricMeta],
    preferred: str | None = None,
    table: pd.DataFrame | None = None,
) -> list[tuple[str, pd.DataFrame]]:
    """Every theory section as (title, table); :data:`SECTION_NOTES` has a note for some titles.

    Args:
        table: ``methods(frame, metas)`` when the caller has it already.
    """
    sections: list[tuple[str, pd.DataFrame]] = []
    if frame.empty:
        return sections
    table = methods(frame, metas) if table is None else table
    ident = identity_checks(frame, metas)
    if not ident.empty:
        sections.append(("Identity settings reproduce the dense model", ident))
    sections += check_sections(frame, metas)
    metric = primary_metric(metas, preferred)
    if metric is not None and f"metric:{metric.name}" in frame:
        front = _pareto_section(table, metric)
        if not front.empty:
            sections.append((f"Pareto front: {metric.name} against stored bits", front))
        eq = equal_bits(frame, metric, table=table)
        if not eq.empty:
            sections.append((EQUAL_BITS, eq))
    rd = rate_distortion_table(frame, table)
    if not rd.empty:
        sections.append((RATE_DISTORTION, rd))
    structure = weight_structure_table(frame)
    if not structure.empty:
        sections.append((WEIGHT_STRUCTURE, structure))
    return sections
