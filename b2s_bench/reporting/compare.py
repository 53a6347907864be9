"""A regression gate: compare two run folders method by method, with intervals, and apply rules.

Cells are matched by (model, dataset, method label); the seeds of a method are pooled
(:func:`b2s_bench.reporting.tables.methods`). For every metric both runs have (checks excepted), the change
``new − base`` gets a 95 % interval:

- **paired**, where both runs store per-example outcomes for the same examples (the same data
  fingerprint and count): a paired bootstrap of the differences that resamples clusters of examples
  where the records name them and each run's seeds (:func:`b2s_bench.reporting.stats.pooled_paired`), with
  McNemar's exact p-value as a secondary figure for right/wrong outcomes of one seed on independent
  examples;
- **independent** bootstraps of each run's mean, where the examples differ;
- **exact** for size metrics (stored bits are counted, not sampled);
- none where the records store no per-example outcomes (the change alone is compared).

A rule ``METRIC<DELTA`` fails when the change is significantly below DELTA (in the metric's
recorded unit, e.g. percentage points for top-1, x for the ratio, bits for the size): the upper end
of its interval is below DELTA (the change itself, without an interval). ``METRIC>DELTA`` fails
when the lower end is above DELTA. So ``top1<-0.5`` fails a drop of top-1 accuracy that is
significantly larger than half a point, and ``kl>0.01`` a significant rise of KL above 0.01.

A model whose weights differ between the runs (another weights file, a zoo model trained on another
machine: the weights' hash in the records' fingerprints differs) is named, and its rows are kept out
of the gate unless ``gate_model_changes``: their changes may be the model's, not the method's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import UserError
from ..store.records import write_atomic
from . import stats
from .tables import MetricMeta, load_frame, methods, sample_scale, stats_note
from .theory import shared_clusters

__all__ = [
    "Rule",
    "Change",
    "Comparison",
    "parse_rule",
    "compare_runs",
    "to_markdown",
    "to_json",
    "write_comparison",
    "terminal_text",
    "ModelChange",
]

_RULE = re.compile(r"^\s*([A-Za-z0-9_.:\-]+)\s*([<>])\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_KEY = ("model", "dataset", "method")


@dataclasses.dataclass(frozen=True)
class Rule:
    """``METRIC<DELTA`` or ``METRIC>DELTA``; DELTA in the metric's recorded unit."""

    metric: str
    op: str
    delta: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.delta:g}"

    def fails(self, change: Change) -> bool:
        """Whether the change is significantly beyond the threshold (see the module docstring)."""
        if change.metric != self.metric or math.isnan(change.diff):
            return False
        if self.op == "<":
            hi = change.hi if not math.isnan(change.hi) else change.diff
            return hi < self.delta
        lo = change.lo if not math.isnan(change.lo) else change.diff
        return lo > self.delta


def parse_rule(text: str) -> Rule:
    """A rule from ``METRIC<DELTA`` / ``METRIC>DELTA`` (spaces allowed).

    Raises:
        UserError: text of another form.
    """
    m = _RULE.match(text)
    if not m:
        raise UserError(
            f"--fail-on {text!r}: write METRIC<DELTA or METRIC>DELTA in the metric's unit, e.g. "
            "'ratio<-0.5' (fail when the ratio drops significantly by more than 0.5x)"
        )
    return Rule(m.group(1), m.group(2), float(m.group(3)))


@dataclasses.dataclass(frozen=True)
class Change:
    """One metric of one method: base and new values, the change, its interval and test."""

    model: str
    dataset: str | None
    method: str
    metric: str
    unit: str
    higher_is_better: bool
    base: float
    new: float
    diff: float
    lo: float
    hi: float
    test: str  # "paired", "McNemar exact", "independent", "exact" or "–"
    p: float

    @property
    def significant(self) -> bool:
        return stats.excludes(self.lo, self.hi) if self.test != "exact" else self.diff != 0

    @property
    def worse(self) -> bool:
        return self.significant and (self.diff < 0) == self.higher_is_better


@dataclasses.dataclass(frozen=True)
class ModelChange:
    """A model whose weights differ between the runs, and how many of the comparison's rows are its."""

    model: str
    base: tuple[str, ...]  # the weights' identities (fingerprints) in the base run's records
    new: tuple[str, ...]
    rows: int

    def text(self, gated: bool) -> str:
        rows = f"its {self.rows} row{'s' if self.rows != 1 else ''}"
        how = (
            f"{rows} are gated (--gate-model-changes)"
            if gated
            else f"{rows} are kept out of the gate; pass --gate-model-changes to include them"
        )
        return f"{self.model}: weights differ ({_weights_text(self.base)} vs {_weights_text(self.new)}); {how}"


def _weights_text(identities: tuple[str, ...]) -> str:
    """``sha256 ab12cd34…`` for a fingerprint with a hash (several joined by commas), else the fingerprint."""
    out = []
    for ident in identities:
        m = re.search(r"sha256:([0-9a-f]{8,})", ident)
        out.append(f"sha256 {m.group(1)[:8]}…" if m else ident)
    return ", ".join(out) or "unknown"


@dataclasses.dataclass
class Comparison:
    base_dir: Path
    new_dir: Path
    rules: list[Rule]
    changes: list[Change]
    only_base: list[tuple[str, str | None, str]]
    only_new: list[tuple[str, str | None, str]]
    model_changes: list[ModelChange] = dataclasses.field(default_factory=list)
    gate_model_changes: bool = False  # whether rows of models whose weights differ count in the gate
    #: (model, dataset, method, why) of each method ok in the base run whose cells in the new run all ended
    #: otherwise (an error, not-applicable, short-of-target): a regression no metric shows, so it fails the gate
    lost: list[tuple[str, str | None, str, str]] = dataclasses.field(default_factory=list)
    suites: tuple[str, str] = ("", "")  # (base, new): the suite each run is of

    @property
    def suites_note(self) -> str | None:
        """A line saying the runs are of different suites (methods are still matched by model, dataset, label)."""
        base, new = self.suites
        if base == new:
            return None
        return f"the runs are of different suites (base {base}, new {new}): methods are matched by model, dataset and label"

    def gated(self, change: Change) -> bool:
        """Whether the rules apply to this change: not to a model whose weights differ, unless asked."""
        return self.gate_model_changes or change.model not in {m.model for m in self.model_changes}

    @property
    def failed(self) -> list[tuple[Rule, Change]]:
        return [(rule, c) for rule in self.rules for c in self.changes if self.gated(c) and rule.fails(c)]

    @property
    def passed(self) -> bool:
        """No rule failed and, where there are rules, no method ok in the base run was lost in the new run
        (a model whose weights differ counts only with ``gate_model_changes``)."""
        changed = set() if self.gate_model_changes else {m.model for m in self.model_changes}
        return not self.failed and not (self.rules and any(k[0] not in changed for k in self.lost))


def _interval(meta: MetricMeta, b: pd.Series, n: pd.Series, diff: float) -> tuple[float, float, str, float]:
    """(lo, hi, test, p) of new − base for one metric of one method."""
    if meta.kind == "size":
        return diff, diff, "exact", math.nan
    xb, xn = b.get(f"runs:{meta.name}"), n.get(f"runs:{meta.name}")  # seeds x examples
    if xb is None or xn is None:
        return math.nan, math.nan, "–", math.nan
    scale = sample_scale(meta.unit)
    # clusters of examples (the views of one photo) and each run's seeds are resampled, not only
    # examples (b2s_bench.reporting.stats); the interval alone decides, McNemar's p is shown only where its
    # assumptions hold (one seed each, independent examples)
    same, clusters = shared_clusters(b, n, meta.name)
    if not (same and b.get("data_fingerprint") == n.get("data_fingerprint")):
        cb, cn = b.get("clusters"), n.get("clusters")
        r = stats.pooled_independent(
            xb,
            xn,
            cb if isinstance(cb, np.ndarray) else None,
            cn if isinstance(cn, np.ndarray) else None,
            scale,
            aggregate=meta.aggregate,
        )
        return r.lo, r.hi, "independent", r.p
    r = stats.pooled_paired(xb, xn, clusters, scale, aggregate=meta.aggregate)
    if xb.shape[0] == 1 and xn.shape[0] == 1 and clusters is None and xb.dtype == bool and xn.dtype == bool:
        return r.lo, r.hi, "McNemar exact", stats.mcnemar_exact(xb[0], xn[0]).p
    return r.lo, r.hi, "paired", r.p


def _keys(table: pd.DataFrame) -> dict[tuple[str, str | None, str], pd.Series]:
    out = {}
    for _, r in table.iterrows():
        dataset = r["dataset"] if isinstance(r["dataset"], str) else None
        out[(r["model"], dataset, r["method"])] = r
    return out


def _weights_by_model(frame: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """Each model (label) of a run's records: the distinct identities of its weights (None when unknown)."""
    if frame.empty or "weights" not in frame:
        return {}
    return {
        str(model): tuple(sorted({str(w) for w in group["weights"] if isinstance(w, str)}))
        for model, group in frame.groupby("model", sort=True)
    }


def compare_runs(
    base_dir: str | os.PathLike[str],
    new_dir: str | os.PathLike[str],
    rules: Sequence[Rule] = (),
    all_records: bool = False,
    gate_model_changes: bool = False,
) -> Comparison:
    """Compare every method both runs have, metric by metric.

    A model both runs have whose weights differ (see :func:`b2s_bench.reporting.tables.load_frame`'s ``weights``)
    is listed in ``model_changes``; its rows count in the gate only with ``gate_model_changes``.

    Raises:
        UserError: a folder without records, or a rule on a metric neither run has.
    """
    loaded = []
    for folder in (Path(base_dir), Path(new_dir)):
        if not (folder / "cells").is_dir():
            raise UserError(f"{folder} is not a run folder (no cells/ inside)")
        dropped: list[tuple[Path, str]] = []
        loaded.append(load_frame(folder, only_current=not all_records, dropped=dropped))
        for path, why in dropped:  # never silently, as in a report
            print(f"warning: {path} is not a valid record and is left out of the comparison: {why}", file=sys.stderr)
    (fb, mb, sb), (fn, mn, sn) = loaded
    metas = {m.name: m for m in [*mb, *mn]}
    for rule in rules:
        if rule.metric not in metas:
            raise UserError(f"--fail-on {rule}: no metric {rule.metric!r} in either run (they have {sorted(metas)})")
    shared = [m for m in mn if m.name in {x.name for x in mb} and "check" not in m.roles]
    base, new = _keys(methods(fb, shared)), _keys(methods(fn, shared))
    changes = []
    for key in sorted(set(base) & set(new), key=lambda k: tuple(str(x) for x in k)):
        b, n = base[key], new[key]
        for meta in shared:
            vb, vn = float(b[f"metric:{meta.name}"]), float(n[f"metric:{meta.name}"])
            if math.isnan(vb) and math.isnan(vn):
                continue
            diff = vn - vb
            lo, hi, test, p = _interval(meta, b, n, diff) if not math.isnan(diff) else (math.nan, math.nan, "–", math.nan)
            changes.append(Change(*key, meta.name, meta.unit, meta.higher_is_better, vb, vn, diff, lo, hi, test, p))
    lost = _lost(fn, set(base) - set(new))
    wb, wn = _weights_by_model(fb), _weights_by_model(fn)
    model_changes = [
        ModelChange(m, wb[m], wn[m], sum(c.model == m for c in changes))
        for m in sorted(set(wb) & set(wn))
        if wb[m] and wn[m] and wb[m] != wn[m]
    ]  # unknown: no claim
    return Comparison(
        Path(base_dir),
        Path(new_dir),
        list(rules),
        changes,
        sorted(set(base) - set(new) - {k[:3] for k in lost}, key=str),
        sorted(set(new) - set(base), key=str),
        model_changes,
        gate_model_changes,
        lost,
        (str(sb.get("suite", "")), str(sn.get("suite", ""))),
    )


def _lost(frame: pd.DataFrame, keys: set[tuple[str, str | None, str]]) -> list[tuple[str, str | None, str, str]]:
    """Of ``keys`` (methods ok in the base run, with no ok cell in the new run ``frame``), those the new run has
    records of, each with the first of those records' status and why."""
    if frame.empty or "status" not in frame:
        return []
    found: dict[tuple[str, str | None, str], str] = {}
    for _, r in frame[frame["status"] != "ok"].iterrows():
        key = (r["model"], r["dataset"] if isinstance(r["dataset"], str) else None, r["method"])
        if key in keys and key not in found:
            if r["status"] == "error":
                why = f"{r.get('error_type') or 'error'}: {r.get('error') or ''}".rstrip(": ")
            else:
                why = str(r.get("status_reason") or "")
            found[key] = f"{r['status']}: {why}" if why else str(r["status"])
    return [(*k, found[k]) for k in sorted(found, key=str)]


def _num(v: float) -> str:
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.4e}"


def _signed(v: float) -> str:
    return "–" if math.isnan(v) else ("+" if v >= 0 else "") + _num(v)


def _ci(c: Change) -> str:
    if c.test == "exact":
        return "exact"
    return "–" if math.isnan(c.lo) else f"[{_signed(c.lo)}, {_signed(c.hi)}]"


def _verdict(c: Change, cmp: Comparison) -> str:
    broken = [str(r) for r in cmp.rules if r.fails(c)]
    if broken and not cmp.gated(c):
        return "would fail " + ", ".join(broken) + " (weights differ; not gated)"
    if broken:
        return "FAIL " + ", ".join(broken)
    if c.test == "–":
        return "no interval"
    if not c.significant:
        return "no significant change"
    return "worse" if c.worse else "better"


def to_markdown(cmp: Comparison) -> str:
    """The comparison as markdown: one table per model, the rules and what failed."""
    lines = [
        f"# Comparison: {cmp.new_dir} against {cmp.base_dir}",
        "",
        "Changes are new − base, in each metric's recorded unit. " + stats_note(),
        "",
        *([f"Note: {cmp.suites_note}.", ""] if cmp.suites_note else []),
    ]
    if cmp.rules:
        failed = cmp.failed
        lines += [
            f"Rules: {', '.join(f'`{r}`' for r in cmp.rules)}: "
            + (f"**{len(failed)} failed**" if failed else "all passed")
            + (f"; **{len(cmp.lost)} methods ok in the base run are not in the new run: the gate fails**" if cmp.lost else ""),
            "",
        ]
    if cmp.model_changes:
        lines += [
            "## Models whose weights differ",
            "",
            "Their changes may come from the model, not the method.",
            "",
            *[f"- {m.text(cmp.gate_model_changes)}" for m in cmp.model_changes],
            "",
        ]
    by_model: dict[str, list[Change]] = {}
    for c in cmp.changes:
        by_model.setdefault(f"{c.model} on {c.dataset}" if c.dataset else c.model, []).append(c)
    for title, changes in by_model.items():
        lines += [
            f"## {title}",
            "",
            "| method | metric | base | new | Δ | 95% CI of Δ | test | p | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c in changes:
            unit = f" [{c.unit}]" if c.unit else ""
            lines.append(
                f"| {c.method} | {c.metric}{unit} | {_num(c.base)} | {_num(c.new)} | {_signed(c.diff)} | "
                f"{_ci(c)} | {c.test} | {_num(c.p)} | {_verdict(c, cmp)} |"
            )
        lines.append("")
    if cmp.lost:
        lines += [
            "## Ok in the base run, not in the new run",
            "",
            *[f"- {m} on {d}: {meth}: {why}" for m, d, meth, why in cmp.lost],
            "",
        ]
    for what, keys in (("Only in the base run", cmp.only_base), ("Only in the new run", cmp.only_new)):
        if keys:
            lines += [f"## {what}", "", *[f"- {m} on {d}: {meth}" for m, d, meth in keys], ""]
    return "\n".join(lines)


def _finite(v: float) -> float | None:
    return v if isinstance(v, float) and math.isfinite(v) else None


def to_json(cmp: Comparison) -> dict[str, Any]:
    """The comparison as JSON-safe data (non-finite numbers as null)."""

    def change(c: Change) -> dict[str, Any]:
        d = {k: (_finite(v) if isinstance(v, float) else v) for k, v in dataclasses.asdict(c).items()}
        return {
            **d,
            "significant": c.significant,
            "gated": cmp.gated(c),
            "failed_rules": [str(r) for r in cmp.rules if r.fails(c) and cmp.gated(c)],
        }

    return {
        "base": str(cmp.base_dir),
        "new": str(cmp.new_dir),
        "rules": [str(r) for r in cmp.rules],
        "passed": cmp.passed,
        "changes": [change(c) for c in cmp.changes],
        "model_changes": [dataclasses.asdict(m) for m in cmp.model_changes],
        "gate_model_changes": cmp.gate_model_changes,
        "only_base": [list(k) for k in cmp.only_base],
        "only_new": [list(k) for k in cmp.only_new],
        "lost": [list(k) for k in cmp.lost],
        "statistics": {"resamples": stats.RESAMPLES, "seed": stats.SEED, "level": stats.LEVEL},
    }


def write_comparison(cmp: Comparison, out_dir: str | os.PathLike[str]) -> list[Path]:
    """``comparison.md`` and ``comparison.json`` in ``out_dir`` (written atomically)."""
    out = Path(out_dir)
    md, js = out / "comparison.md", out / "comparison.json"
    write_atomic(md, to_markdown(cmp))
    write_atomic(js, json.dumps(to_json(cmp), indent=1, ensure_ascii=False))
    return [md, js]


def terminal_text(cmp: Comparison, width: int = 100) -> str:
    """What the CLI prints: each model whose weights differ, then every significant change of a quality
    or size metric and every rule failure, one line each, within ``width`` columns."""
    lines = [cmp.suites_note] if cmp.suites_note else []
    for m in cmp.model_changes:
        head, sep, tail = m.text(cmp.gate_model_changes).partition("; ")
        lines += [head + sep.rstrip(), "  " + tail] if len(head) + len(sep) + len(tail) > width else [head + sep + tail]
    for c in cmp.changes:
        broken = any(r.fails(c) for r in cmp.rules)
        if not (broken or c.significant and c.test != "exact" or c.test == "exact" and c.diff != 0):
            continue
        head = f"{c.model} {c.method}"
        tail = f" {c.metric} {_signed(c.diff)} {_ci(c)} {_verdict(c, cmp)}"
        room = width - len(tail)
        lines.append((head if len(head) <= room else head[: max(room - 1, 0)] + "…") + tail)
    n = len({(c.model, c.dataset, c.method) for c in cmp.changes})
    ungated = sum(c.significant and not cmp.gated(c) for c in cmp.changes)
    lines.append(
        f"{n} methods compared; {sum(c.significant for c in cmp.changes)} significant changes"
        + (f" ({ungated} on changed models)" if ungated else "")
        + "; "
        f"{len(cmp.only_base)} only in base, {len(cmp.only_new)} only in new"
        + (f", {len(cmp.lost)} ok in base but not in new" if cmp.lost else "")
    )
    for model, _, method, why in cmp.lost:
        line = f"{model} {method} ok in base, now {why}"
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    if cmp.rules:
        failed = cmp.failed
        verdict = f"{len(failed)} FAILED" if failed else "passed"
        if cmp.lost and not cmp.passed:
            verdict += f", but the gate FAILED: {len(cmp.lost)} method(s) ok in base not ok in new"
        lines.append(f"rules {', '.join(map(str, cmp.rules))}: " + verdict)
    return "\n".join(lines)
