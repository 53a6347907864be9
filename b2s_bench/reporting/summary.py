"""The terminal summary a run ends with: per model, the best methods by the primary metric.

``b2s-bench run`` prints :func:`summary_text` instead of the whole leaderboard (which is hundreds of
columns wide): for each model and dataset, the dense reference and the top methods with their
compression ratio and the primary metric's 95 % interval, within ``width`` columns. Only ``ok`` cells
are ranked; the ``not-applicable`` and ``short-of-target`` ones follow in their own list, with why.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .tables import (
    BELOW_LIMIT,
    CAVEAT_MARK,
    NOT_APPLICABLE_TITLE,
    MetricMeta,
    header,
    load_frame,
    methods,
    not_applicable,
    primary_metric,
    short_labels,
)

__all__ = ["summary_text", "summary_lines", "BELOW_LIMIT_LINE"]

#: the summary's note when a result is below the Gaussian limit: the three possible causes
BELOW_LIMIT_LINE = f"⚠ {BELOW_LIMIT[2:]}: structure used, weights not Gaussian, or a miscounted size; see the leaderboard"


def _num(value: float, unit: str) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.2f}" if unit == "%" or abs(value) >= 1 else f"{value:.3g}"


def _value(r: pd.Series, metric: MetricMeta) -> str:
    text = _num(r[f"metric:{metric.name}"], metric.unit)
    std = r.get(f"std:{metric.name}", math.nan)
    return f"{text} ± {_num(std, metric.unit)}" if isinstance(std, float) and not math.isnan(std) else text


def _ci(r: pd.Series, metric: MetricMeta) -> str:
    lo, hi = r.get(f"ci_lo:{metric.name}", math.nan), r.get(f"ci_hi:{metric.name}", math.nan)
    return "–" if math.isnan(lo) else f"[{_num(lo, metric.unit)}, {_num(hi, metric.unit)}]"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _ranked(group: pd.DataFrame, metric: MetricMeta | None) -> pd.DataFrame:
    rest = group[~group["dense"]].copy()
    if metric is None:
        return rest.sort_values(["ratio_model", "method"], ascending=[False, True], kind="mergesort")
    sign = -1.0 if metric.higher_is_better else 1.0
    rest["_key"] = sign * rest[f"metric:{metric.name}"]
    return rest.sort_values(
        ["_key", "ratio_model", "method"], ascending=[True, False, True], na_position="last", kind="mergesort"
    )


def _model_lines(title: str, group: pd.DataFrame, metric: MetricMeta | None, top: int, width: int) -> list[str]:
    lines = []
    dense = group[group["dense"]]
    head = f"{title}"
    if metric is not None:
        head += f" · {header(metric)}, 95% CI"
    if len(dense) and metric is not None:
        d = dense.iloc[0]
        ci = _ci(d, metric)
        head += f" · dense {_value(d, metric)}{'' if ci == '–' else ' ' + ci} at {d['total_bits'] / 8e6:.3g} MB"
    lines.append(_fit(head, width))
    ranked = _ranked(group, metric)
    value_w, ci_w, ratio_w = 15, 18, 9
    method_w = max(12, width - 4 - ratio_w - (value_w + ci_w + 2 if metric is not None else 0) - 4)
    cols = f"{'':>3} {'method':<{method_w}} {'ratio':>{ratio_w}}"
    if metric is not None:
        cols += f" {metric.name:>{value_w}} {'95% CI':>{ci_w}}"
    lines.append(cols.rstrip())
    shown = ranked.head(top)
    flags = [(" ⚠" if r.get("rd_below") else "") + (f" {CAVEAT_MARK}" if r.get("caveats") else "") for _, r in shown.iterrows()]
    # two settings must never print the same row name: a cut keeps the part where they differ
    names = short_labels([str(m) for m in shown["method"]], method_w - max((len(f) for f in flags), default=0))
    for i, ((_, r), flag) in enumerate(zip(shown.iterrows(), flags, strict=True), 1):
        name = names[str(r["method"])] + flag
        line = f"{i:>3} {name:<{method_w}} {_num(r['ratio_model'], 'x') + 'x':>{ratio_w}}"
        if metric is not None:
            line += f" {_value(r, metric):>{value_w}} {_ci(r, metric):>{ci_w}}"
        lines.append(line.rstrip())
    if len(ranked) > top:
        lines.append(f"    (+{len(ranked) - top} more methods)")
    return lines


def summary_lines(
    frame: pd.DataFrame,
    metas: Sequence[MetricMeta],
    settings: dict[str, Any],
    out_dir: Path,
    top: int = 5,
    width: int = 100,
    table: pd.DataFrame | None = None,
) -> list[str]:
    """The lines of :func:`summary_text` from a loaded frame (``table``: its ``methods``, if at hand)."""
    if frame.empty:
        return [f"{out_dir}: no records yet"]
    metric = primary_metric(metas, settings.get("primary"))
    table = methods(frame, metas) if table is None else table
    lines: list[str] = []
    if not table.empty:
        for (model, dataset), group in table.groupby(["model", "dataset"], dropna=False, sort=True):
            title = f"{model} on {dataset}" if isinstance(dataset, str) else str(model)
            lines += [*_model_lines(title, group, metric, top, width), ""]
    skipped = not_applicable(frame)
    if not skipped.empty:
        lines.append(f"{NOT_APPLICABLE_TITLE} (not ranked):")
        for _, r in skipped.iterrows():
            lines.append(_fit(f"  {r['model']} {r['method']}: {r['status']}: {r['reason']}", width))
        lines.append("")
    failed = int((frame["status"] == "error").sum())
    if failed:
        lines.append(f"{failed} failed cell{'s' if failed > 1 else ''}: see the leaderboard's failed cells")
    if "rd_below" in table and table["rd_below"].any():
        lines.append(_fit(BELOW_LIMIT_LINE, width))
    if "caveats" in table and table["caveats"].map(bool).any():
        lines.append(_fit(f"{CAVEAT_MARK} caveats (a setting without effect, an unconverged fit): see the leaderboard", width))
    lines += ["full tables (leaderboard.md, leaderboard.html) in", f"  {out_dir}"]  # a path is never cut
    return lines


def summary_text(out_dir: str | os.PathLike[str], top: int = 5, width: int = 100) -> str:
    """Per model and dataset, the ``top`` methods by the primary metric (better first), with the
    whole-model ratio and the metric's 95 % interval; every line at most ``width`` columns.

    Raises:
        UserError: the run's report settings name a metric its records lack.
    """
    frame, metas, settings = load_frame(out_dir)
    return "\n".join(summary_lines(frame, metas, settings, Path(out_dir), top, width))
