"""The paper's claims, each with a verdict and its evidence level rebuilt from a run's records (the
``claims`` reporter).

One row per claim of Big2Small (arXiv 2603.29768, see ``docs/big2small.md``) and per comparison that
tests it (a model, and the settings the compared cells share): the verdict, how many fit seeds and
which model it rests on, the estimated difference with its 95 % interval, the evidence cells, their
numbers, the setting (fit steps as passes over each tensor, next to the paper's 10,000 full-tensor
epochs) and the caveats. Verdicts, from the interval alone once the evidence is sound:

* "supported": the interval lies above 0 (the paper's direction);
* "refuted": the interval lies below 0;
* "not significant": the interval holds 0;
* "inconclusive (...)": the evidence cannot carry a verdict: fewer than ``MIN_SEEDS`` fit seeds,
  an unconverged fit (``details.caveats``, see ``convergence.py``), a failed fit, or no interval;
  the parenthesis says which, and the estimate and interval are still shown;
* "not testable here": the run has no cells that compare it (e.g. no ablation pair), or the claim
  is about hardware the run did not use.

Comparisons (our [D] choices):

* reconstruction ablations (standardisation, outlier handling, both; each loss term alone and the
  full loss, against MSE): Big2Small cells equal but for those settings, paired by fit seed; the
  difference of weight PSNR in dB, with a t-interval over the seed-level differences;
* Big2Small against quantization at equal bits, and Big2Small then quantization against plain
  quantization at the same size: each against the single-stage ``quantize`` cell of the same model
  whose stored bits are closest, if within ``EQUAL_BITS``, by the quality metric (top-1, else
  agreement). With per-example outcomes in every record, the paired two-level bootstrap over the
  examples (whole clusters where the records name them, e.g. the views of one photo) and Big2Small's
  seeds (``stats.pooled_paired``, called in ``_paired_interval``); without them, the t-interval over
  seeds;
* inference overhead: ``latency_deployed_ms`` against ``latency_ms`` of the same cell, on a GPU
  only (the paper's "about 30 %" is a GPU figure): supported up to ``OVERHEAD_MAX``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from b2s_bench import write_atomic
from b2s_bench.reporting import ReportContext, clusters_of, per_example_arrays, pooled_paired, sample_scale

if TYPE_CHECKING:
    from b2s_bench.reporting import Record

__all__ = ["claims_table", "write_claims", "load_records", "EQUAL_BITS", "OVERHEAD_MAX", "MIN_SEEDS", "VERDICTS", "t_interval"]

EQUAL_BITS = 0.05  # relative difference of stored bits within which two cells are at equal bits
OVERHEAD_MAX = 0.6  # "about 30 %": up to twice the paper's overhead
MIN_SEEDS = 3  # fewer fit seeds than this: inconclusive
PAPER_EPOCHS = 10_000  # the paper's full-tensor epochs per layer: 10,000 passes over each tensor
VERDICTS = ("supported", "refuted", "not significant", "inconclusive", "not testable here")
COLUMNS = ["claim", "model", "verdict", "seeds", "difference", "interval", "evidence", "numbers", "setting", "caveat"]
PREPROCESSING = ("outliers", "standardize", "kappa", "top_percent")
OUTLIERS = ("outliers", "kappa", "top_percent")
LOSS = ("lambda_grad", "lambda_freq", "focal_alpha", "gdl")
# two-sided 95 % quantiles of Student's t for 1..10 degrees of freedom (no scipy dependency)
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)

Cell = dict[str, Any]


def load_records(out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """cell id -> record, from a run folder's ``cells/*.json``."""
    out = {}
    for path in sorted(Path(out_dir, "cells").glob("*.json")):
        rec = json.loads(path.read_text())
        out[rec.get("cell_id", path.stem)] = rec
    return out


def _cells(frame: pd.DataFrame, records: Mapping[str, Mapping[str, Any]]) -> list[Cell]:
    cells = []
    ok = frame[frame["status"] == "ok"] if "status" in frame else frame
    for _, row in ok.iterrows():
        rec = records.get(row["cell_id"], {})
        stages = (rec.get("compressor") or {}).get("pipeline", [])
        details = rec.get("details") or {}
        # a pipeline keeps Big2Small's facts (passes, fit_failed) under its stage (details.stages[0])
        details = {**((details.get("stages") or [{}])[0]), **details}
        cells.append(
            {
                "id": row["cell_id"],
                "model": row["model"],
                "method": row["method"],
                "seed": rec.get("seed", row.get("seed", 0)),
                "stages": [s["name"] for s in stages],
                "configs": [s.get("config", {}) for s in stages],
                "bits": row.get("total_bits"),
                "device": (rec.get("environment") or {}).get("device"),
                "record": rec,
                "passes": details.get("passes"),
                "caveats": [c.get("kind", "") for c in details.get("caveats") or [] if isinstance(c, dict)],
                "failed": bool(details.get("fit_failed")),
                "metrics": {c[7:]: row[c] for c in frame.columns if c.startswith("metric:")},
            }
        )
    return cells


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _quality(cells: list[Cell]) -> str | None:
    for name in ("top1", "agreement"):
        if any(_finite(c["metrics"].get(name)) for c in cells):
            return name
    return None


def _b2s(cells: list[Cell]) -> list[Cell]:
    return [c for c in cells if c["stages"] == ["big2small"]]


def _key(config: Mapping[str, Any], drop: tuple[str, ...] = ()) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in drop}, sort_keys=True, default=str)


# -- intervals ---------------------------------------------------------------------------------------------------
def t_interval(values: list[float]) -> tuple[float, float, float] | None:
    """Mean and 95 % t-interval of seed-level differences (None below two values)."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = (_T95[n - 2] if n - 2 < len(_T95) else 1.96 + 2.4 / (n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def _paired_interval(base: np.ndarray, runs: np.ndarray, scale: float, clusters: np.ndarray | None) -> tuple[float, float, float]:
    """Mean of ``runs − base`` over the same examples (``runs``: seeds x examples) and its 95 % interval,
    resampling clusters of examples and the seeds."""
    r = pooled_paired(base, runs, clusters, scale=scale)
    return r.diff, r.lo, r.hi


# -- verdicts ----------------------------------------------------------------------------------------------------
def _problems(evidence: list[Cell], seeds: int) -> list[str]:
    """Why the evidence cannot carry a verdict (empty: it can)."""
    out = []
    if seeds < MIN_SEEDS:
        out.append(f"{seeds} seed" + ("" if seeds == 1 else "s"))
    if any("unconverged" in c["caveats"] for c in evidence):
        out.append("unconverged")
    if any(c["failed"] or "fit_failed" in c["caveats"] for c in evidence):
        out.append("failed fits")
    return out


def verdict(interval: tuple[float, float, float] | None, problems: list[str]) -> str:
    """The verdict of one comparison: from its interval once nothing makes the evidence unsound."""
    if problems:
        return f"inconclusive ({'; '.join(problems)})"
    if interval is None or not all(map(math.isfinite, interval)):
        return "inconclusive (no interval)"
    _, lo, hi = interval
    if lo > 0:
        return "supported"
    if hi < 0:
        return "refuted"
    return "not significant"


def _setting(cells: list[Cell]) -> str:
    if not cells:
        return ""
    devices = sorted({str(c["device"]) for c in cells})
    steps = sorted(
        {
            cfg.get("steps")
            for c in cells
            for n, cfg in zip(c["stages"], c["configs"], strict=False)
            if n == "big2small" and cfg.get("steps")
        }
    )
    passes = sorted({round(c["passes"]) for c in cells if _finite(c["passes"])})
    text = ", ".join(devices)
    if steps:
        text += f"; {'/'.join(f'{s:,}' for s in steps)} fit steps"
    if passes:
        text += f" = {'/'.join(map(str, passes))} passes over each tensor"
    return text + (f" (paper: {PAPER_EPOCHS:,} full-tensor epochs = {PAPER_EPOCHS:,} passes)" if steps else "")


def _caveat(cells: list[Cell], extra: str = "") -> str:
    parts = []
    if any(str(c["device"]) == "cpu" for c in cells):
        parts.append("CPU-scale run: smaller models than the paper's, and fewer fitting passes")
    unconverged = sorted(c["id"] for c in cells if "unconverged" in c["caveats"])
    if unconverged:
        parts.append(f"unconverged fits: {', '.join(unconverged)}")
    failed = sorted(c["id"] for c in cells if c["failed"] or "fit_failed" in c["caveats"])
    if failed:
        parts.append(f"failed fits: {', '.join(failed)}")
    return "; ".join([*parts, extra] if extra else parts)


def _row(
    claim: str,
    model: str,
    interval: tuple[float, float, float] | None,
    seeds: int,
    evidence: list[Cell],
    numbers: list[str],
    unit: str,
    problems: list[str] | None = None,
    caveat: str = "",
    fixed: str | None = None,
) -> dict[str, Any]:
    found = fixed or verdict(interval, _problems(evidence, seeds) + (problems or []))
    diff = "–" if interval is None else f"{interval[0]:+.2f} {unit}".strip()
    ci = "–" if interval is None or not math.isfinite(interval[1]) else f"[{interval[1]:+.2f}, {interval[2]:+.2f}]"
    return {
        "claim": claim,
        "model": model,
        "verdict": found,
        "seeds": seeds,
        "difference": diff,
        "interval": ci,
        "evidence": ", ".join(sorted({c["id"] for c in evidence})),
        "numbers": "; ".join(numbers),
        "setting": _setting(evidence),
        "caveat": _caveat(evidence, caveat),
    }


def _untestable(claim: str, why: str = "the run has no cells that compare it") -> dict[str, Any]:
    return {
        "claim": claim,
        "model": "–",
        "verdict": "not testable here",
        "seeds": 0,
        "difference": "–",
        "interval": "–",
        "evidence": "",
        "numbers": why,
        "setting": "",
        "caveat": "",
    }


# -- reconstruction ablations ----------------------------------------------------------------------------------
def _ablation(
    cells: list[Cell],
    claim: str,
    keys: tuple[str, ...],
    is_on: Callable[[Mapping[str, Any]], bool],
    is_off: Callable[[Mapping[str, Any]], bool],
) -> list[dict[str, Any]]:
    """Big2Small cells equal but for ``keys``, paired by seed: the weight-PSNR gain of ``is_on`` over
    ``is_off``; one row per model and shared setting."""
    b2s = [c for c in _b2s(cells) if _finite(c["metrics"].get("weight_psnr"))]
    groups: dict[tuple[str, str], dict[str, dict[int, Cell]]] = defaultdict(lambda: {"on": {}, "off": {}})
    for c in b2s:
        side = "on" if is_on(c["configs"][0]) else "off" if is_off(c["configs"][0]) else None
        if side:
            groups[(c["model"], _key(c["configs"][0], keys))][side][c["seed"]] = c
    rows = []
    for (model, _), sides in sorted(groups.items()):
        seeds = sorted(set(sides["on"]) & set(sides["off"]))
        if not seeds:
            continue
        pairs = [(sides["on"][s], sides["off"][s]) for s in seeds]
        diffs = [on["metrics"]["weight_psnr"] - off["metrics"]["weight_psnr"] for on, off in pairs]
        interval = t_interval(diffs) or (diffs[0], math.nan, math.nan)
        numbers = [
            f"seed {s}: {on['metrics']['weight_psnr']:.2f} vs {off['metrics']['weight_psnr']:.2f} dB ({d:+.2f})"
            for s, (on, off), d in zip(seeds, pairs, diffs, strict=True)
        ]
        rows.append(_row(claim, model, interval, len(seeds), [c for p in pairs for c in p], numbers, "dB"))
    return rows or [_untestable(claim)]


def _std_on(c: Mapping[str, Any]) -> bool:
    return bool(c.get("standardize"))


def _outliers_on(c: Mapping[str, Any]) -> bool:
    return c.get("outliers", "none") != "none"


def _grad(c: Mapping[str, Any]) -> bool:
    return c.get("lambda_grad", 0) > 0


def _freq(c: Mapping[str, Any]) -> bool:
    return c.get("lambda_freq", 0) > 0


def _ablations(cells: list[Cell]) -> list[dict[str, Any]]:
    return [
        *_ablation(
            cells,
            "outlier-aware preprocessing (standardisation and outliers) improves reconstruction",
            PREPROCESSING,
            lambda c: _std_on(c) and _outliers_on(c),
            lambda c: not _std_on(c) and not _outliers_on(c),
        ),
        *_ablation(cells, "standardisation alone improves reconstruction", ("standardize",), _std_on, lambda c: not _std_on(c)),
        *_ablation(
            cells, "outlier handling alone improves reconstruction", OUTLIERS, _outliers_on, lambda c: not _outliers_on(c)
        ),
        *_ablation(
            cells,
            "the frequency-aware loss (gradient + frequency terms) beats MSE alone",
            LOSS,
            lambda c: _grad(c) and _freq(c),
            lambda c: not _grad(c) and not _freq(c),
        ),
        *_ablation(
            cells,
            "the gradient term alone beats MSE alone",
            LOSS,
            lambda c: _grad(c) and not _freq(c),
            lambda c: not _grad(c) and not _freq(c),
        ),
        *_ablation(
            cells,
            "the frequency term alone beats MSE alone",
            LOSS,
            lambda c: _freq(c) and not _grad(c),
            lambda c: not _grad(c) and not _freq(c),
        ),
    ]


# -- quality at equal bits -------------------------------------------------------------------------------------
def _against_quantization(cells: list[Cell], claim: str, chosen: Callable[[Cell], bool]) -> list[dict[str, Any]]:
    """Each setting of the ``chosen`` cells (its seeds together) against the nearest-sized plain quantization."""
    metric = _quality(cells)
    if metric is None:
        return [_untestable(claim, "no quality metric (top-1 or agreement) in the run")]
    quant = [c for c in cells if c["stages"] == ["quantize"] and _finite(c["bits"]) and _finite(c["metrics"].get(metric))]
    settings: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for c in cells:
        if chosen(c) and _finite(c["bits"]) and _finite(c["metrics"].get(metric)):
            settings[(c["model"], _key({"stages": c["stages"], "configs": c["configs"]}))].append(c)
    rows = []
    for (model, _), runs in sorted(settings.items()):
        bits = sum(c["bits"] for c in runs) / len(runs)
        same = [q for q in quant if q["model"] == model]
        if not same:
            continue
        q = min(same, key=lambda q: abs(q["bits"] / bits - 1))
        if abs(q["bits"] / bits - 1) > EQUAL_BITS:
            continue
        runs = sorted(runs, key=lambda c: c["seed"])
        diffs = [c["metrics"][metric] - q["metrics"][metric] for c in runs]
        interval = _pooled(q["record"], [c["record"] for c in runs], metric)
        how = "paired bootstrap over examples and seeds" if interval else "t-interval over seeds"
        interval = interval or t_interval(diffs) or (diffs[0], math.nan, math.nan)
        label = " > ".join(runs[0]["stages"]) if len(runs[0]["stages"]) > 1 else runs[0]["method"]
        numbers = [
            f"{label} at {bits / 8e6:.3f} MB vs {q['method']} at {q['bits'] / 8e6:.3f} MB, {metric} %: "
            + ", ".join(f"seed {c['seed']} {c['metrics'][metric]:.2f}" for c in runs)
            + f" vs {q['metrics'][metric]:.2f} (mean {sum(diffs) / len(diffs):+.2f}; {how})"
        ]
        rows.append(_row(claim, model, interval, len(runs), [*runs, q], numbers, "points"))
    return rows or [_untestable(claim, "no Big2Small cell has a plain quantization cell within 5 % of its bits")]


def _pooled(base: Record, runs: list[Record], metric: str) -> tuple[float, float, float] | None:
    """The paired interval of the seeds' outcomes − base over the same examples; None without per-example
    outcomes (or with clusters that do not match them)."""
    a = per_example_arrays(base).get(metric)
    bs = [per_example_arrays(r).get(metric) for r in runs]
    if a is None or any(b is None or b.size != a.size for b in bs):
        return None
    # the views of one photo are not independent: resample the clusters either side's records name
    clusters = next((c for c in (*(clusters_of(r) for r in runs), clusters_of(base)) if c is not None), None)
    if clusters is not None and clusters.size != a.size:
        return None
    value = (runs[0].get("metrics") or {}).get(metric)
    unit = value.get("unit", "") if value else ""
    stacked = np.stack([np.asarray(b, dtype=np.float64) for b in bs if b is not None])
    return _paired_interval(np.asarray(a, dtype=np.float64), stacked, sample_scale(unit), clusters)


def _overhead(cells: list[Cell]) -> list[dict[str, Any]]:
    """One row per model and setting (its fit seeds together): the deployed form's latency over the dense
    model's, on a GPU judged against ``OVERHEAD_MAX`` by the mean over the seeds."""
    claim = "inference with weights rebuilt from the INRs is about 30 % slower"
    groups: dict[tuple[str, str, bool], list[tuple[Cell, float, float]]] = {}
    for b in _b2s(cells):
        dense, deployed = b["metrics"].get("latency_ms"), b["metrics"].get("latency_deployed_ms")
        if not (_finite(dense) and _finite(deployed) and dense > 0):
            continue
        gpu = str(b["device"]).startswith("cuda")
        groups.setdefault((b["model"], b["method"], gpu), []).append((b, dense, deployed))
    rows = []
    for (model, method, gpu), found in sorted(groups.items()):
        overheads = [deployed / dense - 1 for _, dense, deployed in found]
        mean = sum(overheads) / len(overheads)
        verdict_here = ("supported" if mean <= OVERHEAD_MAX else "refuted") if gpu else "not testable here"
        span = lambda xs: f"{min(xs):.2f}" if min(xs) == max(xs) else f"{min(xs):.2f}–{max(xs):.2f}"  # noqa: E731
        number = (
            f"{method}: {span([d for _, _, d in found])} vs {span([d for _, d, _ in found])} ms "
            f"({100 * min(overheads):+.0f} %" + ("" if len(found) == 1 else f" to {100 * max(overheads):+.0f} %") + ")"
        )
        rows.append(
            _row(
                claim,
                model,
                None,
                len(found),
                [b for b, _, _ in found],
                [number],
                "",
                fixed=verdict_here,
                caveat=""
                if gpu
                else "the paper's 30 % is a GPU figure (an RTX PRO 6000); a CPU evaluates the INR at every "
                "weight on every forward, serially (benchmarks/gpu_check.sh measures it on a GPU)",
            )
        )
    return rows or [_untestable(claim)]


def claims_table(frame: pd.DataFrame, records: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """One row per claim and comparison (columns ``COLUMNS``) from a run's frame and its records."""
    cells = _cells(frame, records or {}) if len(frame) else []
    rows = [
        *_ablations(cells),
        *_against_quantization(cells, "Big2Small beats quantization at equal bits", lambda c: c["stages"] == ["big2small"]),
        *_against_quantization(
            cells,
            "Big2Small then quantization beats plain quantization at the same size",
            lambda c: len(c["stages"]) > 1 and c["stages"][0] == "big2small",
        ),
        *_overhead(cells),
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def write_claims(ctx: ReportContext) -> list[Path]:
    """``claims.md`` and ``claims.json`` in the run folder."""
    table = claims_table(ctx.frame, load_records(ctx.out_dir))
    md = Path(ctx.out_dir) / "claims.md"
    lines = [
        f"# Big2Small's claims, from the records of {ctx.suite}",
        "",
        f"Verdicts: supported / refuted (the 95 % interval lies above / below 0), not significant (it holds "
        f"0), inconclusive (fewer than {MIN_SEEDS} fit seeds, unconverged or failed fits), not testable here.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(str(r[c]).replace("|", "/") for c in COLUMNS) + " |")
    write_atomic(md, "\n".join(lines) + "\n")
    js = Path(ctx.out_dir) / "claims.json"
    write_atomic(js, json.dumps(table.to_dict(orient="records"), indent=1) + "\n")
    return [md, js]
