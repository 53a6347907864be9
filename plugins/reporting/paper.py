"""Published numbers beside ours: the ``paper`` report format (``paper.md`` and ``paper.json``, and a
section of the HTML page when the suite's ``report.formats`` select ``paper``: :func:`html_section`).

The values come from ``paper_values.yaml`` shipped next to this module (the Big2Small paper's tables
as a second-hand summary gives them, and the published results of its data-free baselines, each
entry naming its source), plus a ``paper_values.yaml`` in the run folder when there is one (a user's
own values; ``shipped: false`` in it leaves the shipped ones out). See docs/paper-tables.md.

Matching (explicit, our rule): an entry stands for the cells whose model label equals ``model``
(and dataset name equals ``dataset`` when given), whose pipeline's stage names equal
``match.compressors`` in order (``[]``: the dense model), and whose stage configs hold every other
``match`` item:

* ``key: value``: every stage whose config has ``key`` has that value, and at least one stage has it;
* ``stage.key: value``: the same, over the stages named ``stage`` only;
* ``key: {not: value}``: as above, with any value but that one;
* ``activations.key: value``: the suite's activations stage (the record's ``compressor.activations``)
  holds it (``activations.bits: 6`` is the "A6" of W6A6); ``activations: null``: the cell has none.

Numbers compare as numbers (6 equals 6.0; a bool is not a number), lists item by item. Every method
(cells pooled over seeds) an entry matches gives its own row; an entry that matches none is listed
as "not run", with what is missing.

Per row: the published value; ours with its 95 % interval (the leaderboard's: bootstrap over
examples, clusters and seeds); ours − paper with that interval shifted (a published number comes
without an interval, so it is taken as exact); the drop from each side's own fp32 baseline (ours:
the dense cell of the same model and data, else its identity cell; the interval from the paired
bootstrap against it, :func:`b2s_bench.reporting.pooled_paired`) and the difference of the drops;
a verdict in words on each. Sizes and ratios are counted exactly, so they carry no interval: they
equal the paper's at its printed precision (half a unit of its last printed digit) or differ.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from b2s_bench import UserError, write_atomic
from b2s_bench.execution import cell_path, read_record
from b2s_bench.reporting import MetricMeta, ReportContext, pooled_paired, sample_scale

__all__ = [
    "SHIPPED",
    "USER_FILE",
    "SIZE_METRICS",
    "PaperValue",
    "Not",
    "load_values",
    "values_for",
    "match_problem",
    "paper_rows",
    "write_paper",
    "paper_report",
    "PaperReport",
    "html_section",
    "COLUMNS",
    "NOT_RUN_COLUMNS",
]

#: the shipped values
SHIPPED = Path(__file__).with_name("paper_values.yaml")
#: a run folder's own values, read beside the shipped ones
USER_FILE = "paper_values.yaml"
#: metrics computed from a record's size rather than read from its metrics: name -> (how, unit)
SIZE_METRICS = {
    "size_mib": ('stored bits / (8 · 2^20): mebibytes, the unit of the Big2Small paper\'s "MB"', "MiB"),
    "size_mb": ("stored bits / (8 · 10^6)", "MB"),
    "ratio": ("fp32 bits of the whole inference state_dict / stored bits (size.ratio_model)", "x"),
}
_KEYS = {"table", "model", "method", "match", "reported", "source", "fp32", "checkpoint", "note", "dataset"}
_REQUIRED = ("table", "model", "method", "match", "reported", "source")
_SETTING = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
COLUMNS = [
    "table",
    "model",
    "method",
    "ours",
    "metric",
    "paper",
    "measured",
    "measured 95% CI",
    "measured − paper",
    "verdict",
    "paper fp32",
    "paper drop",
    "measured fp32",
    "measured drop",
    "measured drop 95% CI",
    "drop difference",
    "drop verdict",
    "seeds",
    "cells",
    "source",
    "note",
]
NOT_RUN_COLUMNS = ["table", "model", "method", "metrics", "paper", "missing", "source"]
TITLE = "Published numbers beside ours"
#: the match prefix of the suite's activations stage (``activations.bits: 6``; ``activations: null``: none)
ACTIVATIONS = "activations"
NOT_RUN_TITLE = "Not run"
NOT_RUN_TEXT = "Published values no ok cell of this run stands for, with what is missing."


@dataclasses.dataclass(frozen=True)
class Not:
    """A match value ``{not: value}``: any value but this one."""

    value: Any


@dataclasses.dataclass(frozen=True)
class PaperValue:
    """One published method's numbers (one entry of a values file).

    Attributes:
        table: the published table it comes from.
        model: the suite model's ``label`` it is compared with (exact).
        method: the name the source gives the method.
        compressors: the pipeline's stage names, in order (empty: the dense model).
        settings: (key, value) pairs every matching cell's stage configs hold (see the module doc).
        reported: metric -> the published value.
        source: where the numbers come from.
        fp32: metric -> the source's own uncompressed baseline of the model (for drops).
        checkpoint: the source's fp32 weights ("" when not known).
        note: anything a reader must know ("" when nothing).
        dataset: the dataset name the cells must have (None: any).
        origin: the file it was read from.
        printed / printed_fp32: metric -> the decimals the source prints (by default those of the
            value's shortest form; a value written as text, "1.000", keeps its own).
    """

    table: str
    model: str
    method: str
    compressors: tuple[str, ...]
    settings: tuple[tuple[str, Any], ...]
    reported: tuple[tuple[str, float], ...]
    source: str
    fp32: tuple[tuple[str, float], ...] = ()
    checkpoint: str = ""
    note: str = ""
    dataset: str | None = None
    origin: str = ""
    printed: tuple[tuple[str, int], ...] = ()
    printed_fp32: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        for name in ("table", "model", "method", "source"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"{name}: must be a non-empty text")
        if not self.reported:
            raise ValueError("reported: give at least one metric: value")
        missing = sorted(set(dict(self.fp32)) - set(dict(self.reported)))
        if missing:
            raise ValueError(f"fp32: {missing} are not among the reported metrics {sorted(dict(self.reported))}")

    def decimals(self, metric: str, fp32: bool = False) -> int:
        """The decimals the source prints a reported (or its fp32) value of ``metric`` with."""
        values, printed = (self.fp32, self.printed_fp32) if fp32 else (self.reported, self.printed)
        found = dict(printed)
        return found[metric] if metric in found else _decimals(dict(values)[metric])

    def wanted(self) -> str:
        """The match as text: ``[squant] bits=6, activation_bits=6``."""
        stages = "[" + ", ".join(self.compressors) + "]" if self.compressors else "the dense model"
        items = ", ".join(f"{k}={_text(v)}" for k, v in self.settings)
        return f"{stages} {items}".strip()


def _text(value: Any) -> str:
    if isinstance(value, Not):
        return "≠" + _text(value.value)
    return json.dumps(value) if not isinstance(value, str) else value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fail(origin: str, where: str, problem: str, fix: str) -> UserError:
    return UserError(f"{origin}: {where}: {problem}; {fix}")


def _setting_value(origin: str, where: str, value: Any) -> Any:
    if isinstance(value, Mapping):
        if set(value) != {"not"}:
            raise _fail(origin, where, f"a mapping {dict(value)!r} is no setting value", "write a value, or {not: VALUE}")
        return Not(_setting_value(origin, where, value["not"]))
    if isinstance(value, list):
        return tuple(_setting_value(origin, where, v) for v in value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise _fail(origin, where, f"{value!r} is a {type(value).__name__}", "write a number, text, true/false, null or a list")


_NUMBER = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?")


def _metrics(origin: str, where: str, raw: Any) -> tuple[tuple[tuple[str, float], ...], tuple[tuple[str, int], ...]]:
    """(metric, value) pairs and (metric, decimals printed) pairs: a value written as text ("1.000")
    keeps the decimals YAML would drop from a number (1.0)."""
    if not isinstance(raw, Mapping) or not raw:
        raise _fail(origin, where, f"{raw!r} is not a mapping of metric names to numbers", "write e.g. {top1: 71.24}")
    values, printed = [], []
    for name, value in raw.items():
        text = value.strip() if isinstance(value, str) else None
        if text is not None and _NUMBER.fullmatch(text):
            values.append((str(name), float(text)))
            printed.append((str(name), len(text.partition(".")[2])))
            continue
        if not isinstance(name, str) or not _number(value) or not math.isfinite(float(value)):
            raise _fail(
                origin,
                f"{where}.{name}",
                f"{value!r} is not a finite number",
                'write the published number (as text, "1.000", to keep its zeros)',
            )
        values.append((name, float(value)))
        printed.append((name, _decimals(float(value))))
    return tuple(values), tuple(printed)


def _entry(origin: str, i: int, raw: Any) -> PaperValue:
    where = f"values[{i}]"
    if not isinstance(raw, Mapping):
        raise _fail(origin, where, f"{raw!r} is not a mapping", "write one mapping per published method")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise _fail(origin, f"{where}.{unknown[0]}", "unknown key", f"use only {sorted(_KEYS)}")
    for key in _REQUIRED:
        if key not in raw:
            raise _fail(origin, f"{where}.{key}", "missing", "every entry needs " + ", ".join(_REQUIRED))
    for key in ("table", "model", "method", "source", "checkpoint", "note", "dataset"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key].strip()):
            raise _fail(origin, f"{where}.{key}", f"{raw[key]!r} is not a non-empty text", "write it as text")
    match = raw["match"]
    if not isinstance(match, Mapping) or "compressors" not in match:
        raise _fail(origin, f"{where}.match", f"{match!r} has no compressors", "write {compressors: [NAME, ...], KEY: VALUE}")
    stages = match["compressors"]
    if not isinstance(stages, list) or not all(isinstance(s, str) and s for s in stages):
        raise _fail(origin, f"{where}.match.compressors", f"{stages!r} is not a list of names", "write [] for the dense model")
    settings = []
    for key, value in match.items():
        if key == "compressors":
            continue
        if key == ACTIVATIONS:
            if match[key] is not None:
                raise _fail(
                    origin,
                    f"{where}.match.{key}",
                    f"{match[key]!r} is not null",
                    "write `activations: null` (no activations stage) or `activations.KEY: VALUE`",
                )
            settings.append((key, None))
            continue
        if not isinstance(key, str) or not _SETTING.fullmatch(key):
            raise _fail(origin, f"{where}.match.{key}", "not a setting name", "write KEY or STAGE.KEY")
        if "." in key and key.split(".")[0] not in (*stages, ACTIVATIONS):
            raise _fail(
                origin, f"{where}.match.{key}", f"no stage {key.split('.')[0]!r} in {stages}", "name a stage of compressors"
            )
        settings.append((key, _setting_value(origin, f"{where}.match.{key}", value)))
    reported, printed = _metrics(origin, f"{where}.reported", raw["reported"])
    fp32, printed_fp32 = _metrics(origin, f"{where}.fp32", raw["fp32"]) if "fp32" in raw else ((), ())
    try:
        return PaperValue(
            table=raw["table"],
            model=raw["model"],
            method=raw["method"],
            compressors=tuple(stages),
            settings=tuple(settings),
            reported=reported,
            source=raw["source"],
            fp32=fp32,
            printed=printed,
            printed_fp32=printed_fp32,
            checkpoint=raw.get("checkpoint", ""),
            note=raw.get("note", ""),
            dataset=raw.get("dataset"),
            origin=origin,
        )
    except ValueError as e:
        raise _fail(origin, where, str(e), "fix the entry") from None


def load_values(path: str | Path) -> tuple[list[PaperValue], bool]:
    """The entries of a values file, validated, and whether the shipped values stay in use
    (``shipped:``, true unless the file says false).

    Raises:
        UserError: an unreadable file or an invalid entry (the message names the key and the fix).
    """
    origin = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{origin}: cannot read the paper values ({e}); fix or remove the file") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("values"), list):
        raise _fail(origin, "values", "missing or not a list", "write `values: [...]`, one entry per published method")
    unknown = sorted(set(data) - {"version", "values", "shipped"})
    if unknown:
        raise _fail(origin, unknown[0], "unknown key", "use version, values and shipped only")
    if data.get("version", 1) != 1:
        raise _fail(origin, "version", f"{data['version']!r} is not a known version", "write version: 1")
    shipped = data.get("shipped", True)
    if not isinstance(shipped, bool):
        raise _fail(
            origin, "shipped", f"{shipped!r} is not true or false", "write shipped: false to leave the shipped values out"
        )
    entries = [_entry(origin, i, raw) for i, raw in enumerate(data["values"])]
    seen: dict[tuple[Any, ...], int] = {}
    for i, entry in enumerate(entries):
        key = (entry.table, entry.model, entry.method, entry.compressors, entry.settings, entry.dataset)
        if key in seen:
            raise _fail(origin, f"values[{i}]", f"repeats values[{seen[key]}]", "merge the two entries' reported metrics")
        seen[key] = i
    return entries, shipped


def values_for(run_dir: str | Path) -> tuple[list[PaperValue], list[str]]:
    """The entries a run folder's report uses, and the files they came from."""
    user = Path(run_dir) / USER_FILE
    entries, files = [], []
    own, shipped = load_values(user) if user.is_file() else ([], True)
    if shipped:
        entries += load_values(SHIPPED)[0]
        files.append(f"{SHIPPED.name} (shipped)")
    if user.is_file():
        entries += own
        files.append(str(user))
    return entries, files


# -- matching ------------------------------------------------------------------------------------------------


def _equal(have: Any, want: Any) -> bool:
    if isinstance(want, Not):
        return not _equal(have, want.value)
    if _number(want) and _number(have):
        return math.isclose(float(have), float(want), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(want, tuple):
        return isinstance(have, (list, tuple)) and len(have) == len(want) and all(map(_equal, have, want))
    return type(have) is type(want) and have == want


def match_problem(
    entry: PaperValue, stages: Sequence[Mapping[str, Any]], activations: Mapping[str, Any] | None = None
) -> str | None:
    """Why a cell with these pipeline stages (``[{name, config}]``) and this activations stage (the
    record's ``compressor.activations``, None without one) does not stand for ``entry`` (None: it does)."""
    names = [str(s.get("name")) for s in stages]
    if tuple(names) != entry.compressors:
        return f"its stages are [{', '.join(names)}]" if names else "it is the dense model"
    for key, want in entry.settings:
        stage, _, name = key.rpartition(".")
        if key == ACTIVATIONS:  # `activations: null`: weights only
            if activations is not None:
                return f"it quantizes activations ({ACTIVATIONS}.bits={_text(activations.get('bits'))}; wanted none)"
            continue
        if stage == ACTIVATIONS:
            if activations is None:
                return "it has no activations stage (weights only)"
            configs: list[Mapping[str, Any]] = [activations]
        else:
            configs = [s.get("config") or {} for s in stages if not stage or s.get("name") == stage]
        having = [c[name] for c in configs if name in c]
        if not having:
            return f"no stage has the setting {key!r}"
        wrong = [h for h in having if not _equal(h, want)]
        if wrong:
            return f"{key}={_text(wrong[0])} (wanted {_text(want)})"
    return None


# -- measurements ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Measured:
    value: float
    lo: float
    hi: float
    runs: np.ndarray | None  # seeds x examples, or None
    exact: bool  # a count (sizes), not an estimate


def _measured(row: pd.Series, metric: str) -> _Measured | None:
    if metric in SIZE_METRICS:
        bits, ratio = float(row["total_bits"]), float(row["ratio_model"])
        value = {"size_mib": bits / (8 * 2**20), "size_mb": bits / 8e6, "ratio": ratio}[metric]
        return _Measured(value, math.nan, math.nan, None, True) if math.isfinite(value) else None
    col = f"metric:{metric}"
    if col not in row or not math.isfinite(float(row[col])):
        return None
    runs = row.get(f"runs:{metric}")
    return _Measured(
        float(row[col]),
        float(row.get(f"ci_lo:{metric}", math.nan)),
        float(row.get(f"ci_hi:{metric}", math.nan)),
        runs if isinstance(runs, np.ndarray) else None,
        False,
    )


def _decimals(value: float) -> int:
    """Decimals the value is printed with (its shortest form: 71.24 -> 2, 0.0085 -> 4, 5.9 -> 1)."""
    text = repr(float(value))
    if "e" in text:
        mantissa, exp = text.split("e")
        return max(0, len(mantissa.partition(".")[2].rstrip("0")) - int(exp))
    return len(text.partition(".")[2].rstrip("0"))


def _fmt(x: float, places: int) -> str:
    return "–" if not math.isfinite(x) else f"{x:.{places}f}"


def _interval(lo: float, hi: float, places: int) -> str:
    return "–" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:.{places}f}, {hi:.{places}f}]"


def _words(diff: float, lo: float, hi: float, places: int, paper_places: int, exact: bool, subject: str) -> str:
    """The verdict on ``ours − paper`` (``diff``, with its interval ``lo``..``hi``) of a ``subject``
    ("value" or "drop"): the interval decides where there is one, else the paper's printed precision."""
    if math.isfinite(lo) and math.isfinite(hi):
        if lo <= 0 <= hi:
            return f"the paper's {subject} lies within our 95 % interval"
        if hi < 0:
            return f"below the paper's {subject} by {-diff:.{places}f} [{-hi:.{places}f}, {-lo:.{places}f}]"
        return f"above the paper's {subject} by {diff:.{places}f} [{lo:.{places}f}, {hi:.{places}f}]"
    if not math.isfinite(diff):
        return "–"
    if abs(diff) <= 0.5 * 10.0**-paper_places + 1e-12:
        return f"equal to the paper's {subject} at its printed precision"
    why = "exact counts" if exact else "no interval: the records store no per-example outcomes"
    side = "below" if diff < 0 else "above"
    return f"{side} the paper's {subject} by {abs(diff):.{places}f} ({why})"


def _reference(methods: pd.DataFrame, model: str, dataset: Any) -> pd.Series | None:
    """Our fp32 side: the dense method of that model and data, else its identity method."""
    same = methods[(methods["model"] == model) & _same(methods["dataset"], dataset)]
    for flag in ("dense", "identity"):
        rows = same[same[flag].astype(bool)] if flag in same else same.iloc[0:0]
        if len(rows):
            return rows.iloc[0]
    return None


def _same(column: pd.Series, value: Any) -> pd.Series:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return column.isna()
    return column == value


def _compressor(ctx: ReportContext, cell_id: str, cache: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
    """A cell's ``compressor`` entry (pipeline stages, activations stage) from its record; None when
    the record cannot be read any more (it then matches nothing, rather than passing for the dense model)."""
    if cell_id not in cache:
        rec = read_record(cell_path(ctx.out_dir, cell_id))
        cache[cell_id] = None if rec is None else dict(rec.get("compressor") or {})
    return cache[cell_id]


def _stage_names(compressor: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(s.get("name")) for s in compressor.get("pipeline") or [])


def _problem(ctx: ReportContext, entry: PaperValue, cell_id: str, cache: dict[str, dict[str, Any] | None]) -> str | None:
    """:func:`match_problem` for a cell of the run."""
    found = _compressor(ctx, cell_id, cache)
    if found is None:
        return "its record cannot be read"
    return match_problem(entry, list(found.get("pipeline") or []), found.get(ACTIVATIONS))


def _row(
    entry: PaperValue, metric: str, paper: float, row: pd.Series, ref: pd.Series | None, metas: dict[str, MetricMeta]
) -> dict[str, Any]:
    meta = metas.get(metric)
    got = _measured(row, metric)
    paper_places = entry.decimals(metric)
    places = max(2, paper_places)
    out: dict[str, Any] = {
        "table": entry.table,
        "model": entry.model,
        "method": entry.method,
        "ours": str(row["method"]),
        "metric": metric,
        "paper": paper,
        "seeds": int(row["seeds"]),
        "cells": ", ".join(row["cells"]),
        "source": entry.source,
        "note": entry.note,
        "_places": places,
    }
    if got is None:
        out.update({"measured": math.nan, "verdict": f"not measured: the records have no {metric}"})
        return out
    diff = got.value - paper
    out.update(
        {
            "measured": got.value,
            "measured 95% CI": (got.lo, got.hi),
            "measured − paper": diff,
            "verdict": _words(diff, got.lo - paper, got.hi - paper, places, paper_places, got.exact, "value"),
        }
    )
    fp32 = dict(entry.fp32).get(metric)
    if fp32 is None:
        out["drop verdict"] = "no drop: the source gives no fp32 baseline"
        return out
    out["paper fp32"], out["paper drop"] = fp32, paper - fp32
    if ref is None:
        out["drop verdict"] = "no drop: the run has no dense or identity cell of this model"
        return out
    base = _measured(ref, metric)
    if base is None:
        out["drop verdict"] = f"no drop: the dense cell has no {metric}"
        return out
    drop, lo, hi = got.value - base.value, math.nan, math.nan
    if got.runs is not None and base.runs is not None and meta is not None:
        if got.runs.shape[1] == base.runs.shape[1] and row.get("data_fingerprint") == ref.get("data_fingerprint"):
            clusters = row.get("clusters")
            paired = pooled_paired(
                base.runs,
                got.runs,
                clusters if isinstance(clusters, np.ndarray) else None,
                scale=sample_scale(meta.unit),
                aggregate=meta.aggregate,
            )
            drop, lo, hi = paired.diff, paired.lo, paired.hi
    gap = drop - out["paper drop"]
    words = _words(gap, lo - out["paper drop"], hi - out["paper drop"], places, paper_places, got.exact and base.exact, "drop")
    if meta is not None and words.startswith(("above", "below")):
        better = words.startswith("above") == meta.higher_is_better
        words += ": ours loses less" if better else ": ours loses more"
    out.update(
        {
            "measured fp32": base.value,
            "measured drop": drop,
            "measured drop 95% CI": (lo, hi),
            "drop difference": gap,
            "drop verdict": words,
        }
    )
    return out


def _missing(ctx: ReportContext, entry: PaperValue, cache: dict[str, dict[str, Any] | None]) -> str:
    """What keeps an entry from a row: no such model, no cell with its stages, other settings, failed cells."""
    frame = ctx.frame
    if frame.empty or "model" not in frame:
        return "the run has no records"
    cells = frame[frame["model"] == entry.model]
    if cells.empty:
        return f"no model labelled {entry.model!r} in the run (models: {', '.join(sorted(set(frame['model'])))})"
    if entry.dataset is not None:
        cells = cells[cells["dataset"] == entry.dataset]
        if cells.empty:
            return f"no cell of {entry.model} on the dataset {entry.dataset!r}"
    reasons: dict[str, int] = {}
    failed = []
    for _, c in cells.iterrows():
        compressor = _compressor(ctx, str(c["cell_id"]), cache)
        problem = _problem(ctx, entry, str(c["cell_id"]), cache)
        if problem is None:
            keys = ("error_type", "error") if c["status"] == "error" else ("status_reason",)
            error = ": ".join(str(c.get(k)) for k in keys if isinstance(c.get(k), str) and c.get(k))
            failed.append(f"{c['method']} ({c['status']}{': ' + error if error else ''})")
        elif compressor is not None and _stage_names(compressor) == entry.compressors:
            reasons[problem] = reasons.get(problem, 0) + 1
    if failed:
        return "the matching cells did not succeed: " + "; ".join(sorted(set(failed)))
    if reasons:
        have = "; ".join(sorted(reasons)[:3])
        return f"no cell of {entry.model} with {entry.wanted()}: its [{', '.join(entry.compressors)}] cells have {have}"
    return f"no cell of {entry.model} runs {entry.wanted()}"


def paper_rows(ctx: ReportContext, entries: Sequence[PaperValue]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(one row per entry, metric and matching method; one row per entry that matched nothing;
    the notes on checkpoints that differ)."""
    methods = ctx.methods()
    metas = {m.name: m for m in ctx.metrics}
    cache: dict[str, dict[str, Any] | None] = {}
    rows, not_run = [], []
    checkpoint_notes: dict[tuple[str, str], str] = {}
    for entry in entries:
        found = []
        if not methods.empty:
            for _, r in methods.iterrows():
                if r["model"] != entry.model or (entry.dataset is not None and r["dataset"] != entry.dataset):
                    continue
                if _problem(ctx, entry, str(r["cells"][0]), cache) is None:
                    found.append(r)
        if not found:
            not_run.append(
                {
                    "table": entry.table,
                    "model": entry.model,
                    "method": entry.method,
                    "metrics": ", ".join(f"{m} {v:g}" for m, v in entry.reported),
                    "paper": entry.wanted(),
                    "missing": _missing(ctx, entry, cache),
                    "source": entry.source,
                }
            )
            continue
        for r in found:
            ref = _reference(methods, entry.model, r["dataset"])
            for metric, value in entry.reported:
                rows.append(_row(entry, metric, value, r, ref, metas))
            for metric, fp32 in entry.fp32:
                note = _checkpoint_note(entry, metric, fp32, ref)
                if note:
                    checkpoint_notes.setdefault((entry.model, f"{metric} {fp32:g}"), note)
    table = pd.DataFrame(rows, columns=[*COLUMNS, "_places"])
    return table, pd.DataFrame(not_run, columns=NOT_RUN_COLUMNS), [checkpoint_notes[k] for k in sorted(checkpoint_notes)]


def _checkpoint_note(entry: PaperValue, metric: str, fp32: float, ref: pd.Series | None) -> str:
    """A line when our fp32 model is not the source's: its value lies outside our dense cell's interval
    (or, without one, differs at the source's printed precision)."""
    if ref is None:
        return ""
    base = _measured(ref, metric)
    if base is None:
        return ""
    places = max(2, entry.decimals(metric, fp32=True))
    if math.isfinite(base.lo) and math.isfinite(base.hi):
        if base.lo <= fp32 <= base.hi:
            return ""
        ours = f"{base.value:.{places}f} {_interval(base.lo, base.hi, places)}"
    else:
        if abs(base.value - fp32) <= 0.5 * 10.0 ** -entry.decimals(metric, fp32=True) + 1e-12:
            return ""
        ours = f"{base.value:.{places}f}"
    theirs = f" ({entry.checkpoint})" if entry.checkpoint else ""
    return (
        f"The checkpoints differ on {entry.model}: the source's fp32 {metric} is {fp32:.{places}f}{theirs}, ours "
        f"{ours} ({ref['method']}); compare the drops, not the values."
    )


# -- writing ---------------------------------------------------------------------------------------------------


def _cell(row: pd.Series, col: str) -> str:
    places = int(row["_places"])
    value = row.get(col)
    if col in ("measured 95% CI", "measured drop 95% CI"):
        return _interval(float(value[0]), float(value[1]), places) if isinstance(value, tuple) else "–"
    if col in ("measured − paper", "paper drop", "measured drop", "drop difference"):
        return "–" if not isinstance(value, float) or not math.isfinite(value) else f"{value:+.{places}f}"
    if col in ("paper", "measured", "paper fp32", "measured fp32"):
        return _fmt(float(value), places) if isinstance(value, (int, float)) else "–"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).replace("|", "/")


def _md(table: pd.DataFrame) -> list[str]:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "/") for v in row) + " |")
    return lines


def _json(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class PaperReport:
    """What the ``paper`` format shows, computed once per report (``paper.md``, ``paper.json`` and the
    HTML page's section share it).

    Attributes:
        intro: the paragraph that says where the values come from and how they are compared.
        notes: one line per model whose checkpoint differs from a source's.
        tables: (published table, its rows as display text) in the values file's order.
        not_run: the entries no ok cell stands for, with what is missing.
        rows: every row with its raw numbers (``paper.json``).
    """

    intro: str
    notes: list[str]
    tables: list[tuple[str, pd.DataFrame]]
    not_run: pd.DataFrame
    rows: pd.DataFrame
    files: list[str]


def paper_report(ctx: ReportContext) -> PaperReport:
    """The ``paper`` format's content for a run, computed once per report (``ctx.cached``)."""

    def make() -> PaperReport:
        entries, files = values_for(ctx.out_dir)
        table, not_run, notes = paper_rows(ctx, entries)
        shown = [c for c in COLUMNS if c not in ("table", "cells")]
        tables = [
            (str(title), pd.DataFrame([[_cell(r, c) for c in shown] for _, r in group.iterrows()], columns=shown))
            for title, group in table.groupby("table", sort=False)
        ]
        intro = (
            f"Values from {', '.join(files)}. A value stands for the cells of the model with that label whose "
            'stages and settings it names (docs/paper-tables.md); sizes in MiB (the paper\'s "MB"), ratio of the '
            "whole model. Published numbers come without intervals and are taken as exact; ours carry the "
            "leaderboard's 95 % interval, and a drop is ours against the run's dense cell of the same model "
            "(paired bootstrap), the source's against its own fp32 baseline. Sizes are counts: equal at the "
            "paper's printed precision, or not."
        )
        return PaperReport(intro, notes, tables, not_run, table, files)

    result: PaperReport = ctx.cached("paper", make)
    return result


def write_paper(ctx: ReportContext) -> list[Path]:
    """``paper.md`` and ``paper.json`` in the run folder."""
    report = paper_report(ctx)
    lines = [f"# {TITLE}: {ctx.suite}", "", report.intro]
    if report.notes:
        lines += ["", *[f"**{n}**" for n in report.notes]]
    for title, shown in report.tables:
        lines += ["", f"## {title}", "", *_md(shown)]
    if not report.not_run.empty:
        lines += ["", f"## {NOT_RUN_TITLE}", "", NOT_RUN_TEXT, "", *_md(report.not_run)]
    md = Path(ctx.out_dir) / "paper.md"
    write_atomic(md, "\n".join(lines) + "\n")
    data = {
        "suite": ctx.suite,
        "values_from": report.files,
        "checkpoints": report.notes,
        "rows": [{k: _json(v) for k, v in r.items() if not k.startswith("_")} for r in report.rows.to_dict("records")],
        "not_run": report.not_run.to_dict("records"),
    }
    js = Path(ctx.out_dir) / "paper.json"
    write_atomic(js, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return [md, js]


def html_section(ctx: ReportContext, table_html: Callable[[pd.DataFrame], str]) -> str:
    """The HTML page's section of published numbers (``table_html`` draws a table as the page does);
    only for a suite whose ``report.formats`` select ``paper``."""
    if "paper" not in (ctx.settings.get("formats") or ()):
        return ""
    report = paper_report(ctx)
    parts = [f"<h2>{html.escape(TITLE)}</h2>", f"<p class='note info'>{html.escape(report.intro)}</p>"]
    parts += [f"<p class='note warn'>{html.escape(n)}</p>" for n in report.notes]
    for title, shown in report.tables:
        parts += [f"<h3>{html.escape(title)}</h3>", table_html(shown)]
    if not report.not_run.empty:
        parts += [f"<h3>{html.escape(NOT_RUN_TITLE)}</h3>", f"<p class='note info'>{html.escape(NOT_RUN_TEXT)}</p>"]
        parts.append(table_html(report.not_run))
    return "".join(parts)
