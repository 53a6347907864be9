"""The paper's claims, each with a verdict rebuilt from the records of a run (the ``claims`` reporter).

One row per claim of Big2Small (arXiv 2603.29768, see ``docs/big2small.md``): the verdict, the cells
that are its evidence, their numbers, the setting and the caveat of a CPU-scale run. Verdicts:

* "supported": every comparison goes the paper's way by more than the margin below;
* "refuted": every comparison goes the other way, or by less than the margin;
* "mixed": comparisons disagree (the numbers say which);
* "inconclusive": a confidence interval holds no difference (equal-bits comparison only);
* "not testable here": the run has no cells that compare it (e.g. no ablation pair).

Comparisons and margins (our [D] choices, constants here):

* preprocessing / frequency loss: Big2Small cells that differ *only* in those settings, compared
  by weight PSNR (``MARGIN_DB``; the paper's ablation is a reconstruction table);
* Big2Small vs quantization at equal bits: each single-stage Big2Small cell against the
  single-stage ``quantize`` cell of the same model whose stored bits are closest, if within
  ``EQUAL_BITS`` (the report's equal-bits rule), by the quality metric (top-1, else agreement).
  Where both records keep per-example outcomes (the same test examples), the verdict rests on the
  95 % paired-bootstrap interval of the difference: "supported" when every interval lies above 0;
  "refuted" when none does and at least one lies below 0 (never significantly better, significantly
  worse at some bits); "inconclusive" when every interval holds 0; "mixed" when some lie above 0 and
  others do not. Without
  per-example outcomes, Big2Small must not be worse by more than ``QUALITY_TOL`` points;
* composition: a pipeline that starts with Big2Small against the Big2Small cell with the same
  first-stage settings: fewer bits and a quality loss of at most ``QUALITY_TOL`` points;
* inference overhead: ``latency_deployed_ms`` (weights rebuilt from the INR on every forward)
  against ``latency_ms`` (the decoded dense model) of the same cell; "about 30 %" holds up to
  ``OVERHEAD_MAX``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from b2s_bench import ReportContext, clusters_of, paired_bootstrap, per_example_arrays, sample_scale, write_atomic

__all__ = ["claims_table", "write_claims", "load_records", "MARGIN_DB", "EQUAL_BITS", "QUALITY_TOL", "OVERHEAD_MAX"]

MARGIN_DB = 0.5  # a weight-PSNR difference smaller than this is no effect
EQUAL_BITS = 0.05  # relative difference of stored bits within which two cells are at equal bits
QUALITY_TOL = 1.0  # percentage points of top-1 / agreement
OVERHEAD_MAX = 0.6  # "about 30 %": up to twice the paper's overhead
PAPER_STEPS = 10_000
COLUMNS = ["claim", "verdict", "evidence", "numbers", "setting", "caveat"]
PREPROCESSING = ("outliers", "standardize", "kappa", "top_percent")
LOSS = ("lambda_grad", "lambda_freq", "focal_alpha", "gdl")


def load_records(out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """cell id -> record, from a run folder's ``cells/*.json``."""
    out = {}
    for path in sorted(Path(out_dir, "cells").glob("*.json")):
        rec = json.loads(path.read_text())
        out[rec.get("cell_id", path.stem)] = rec
    return out


def _cells(frame: pd.DataFrame, records: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    cells = []
    ok = frame[frame["status"] == "ok"] if "status" in frame else frame
    for _, row in ok.iterrows():
        rec = records.get(row["cell_id"], {})
        stages = (rec.get("compressor") or {}).get("pipeline", [])
        cells.append({"id": row["cell_id"], "model": row["model"], "method": row["method"],
                      "stages": [s["name"] for s in stages], "configs": [s.get("config", {}) for s in stages],
                      "bits": row.get("total_bits"), "device": (rec.get("environment") or {}).get("device"),
                      "record": rec,
                      "metrics": {c[7:]: row[c] for c in frame.columns if c.startswith("metric:")}})
    return cells


def _quality(cells: list[dict[str, Any]]) -> str | None:
    for name in ("top1", "agreement"):
        if any(_finite(c["metrics"].get(name)) for c in cells):
            return name
    return None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _b2s(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in cells if c["stages"] == ["big2small"]]


def _setting(cells: list[dict[str, Any]]) -> str:
    if not cells:
        return ""
    models = sorted({c["model"] for c in cells})
    devices = sorted({str(c["device"]) for c in cells})
    steps = sorted({cfg.get("steps") for c in cells for n, cfg in zip(c["stages"], c["configs"], strict=False)
                    if n == "big2small" and cfg.get("steps")})
    return f"{', '.join(models)}; {', '.join(devices)}; " + (
        f"{'/'.join(map(str, steps))} fit steps (paper {PAPER_STEPS:,})" if steps else "")


def _caveat(cells: list[dict[str, Any]], extra: str = "") -> str:
    cpu = any(str(c["device"]) == "cpu" for c in cells)
    text = "CPU-scale run: smaller models than the paper's, and fewer fitting steps where fewer are set" if cpu else ""
    return "; ".join(t for t in (text, extra if cpu else "") if t)


def _row(claim: str, verdict: str, evidence: list[dict[str, Any]], numbers: list[str], caveat: str = ""
         ) -> dict[str, Any]:
    return {"claim": claim, "verdict": verdict, "evidence": ", ".join(sorted({c["id"] for c in evidence})),
            "numbers": "; ".join(numbers), "setting": _setting(evidence), "caveat": _caveat(evidence, caveat)}


def _verdict(deltas: list[float], margin: float) -> str:
    if not deltas:
        return "not testable here"
    if all(d > margin for d in deltas):
        return "supported"
    if all(d <= margin for d in deltas):
        return "refuted"
    return "mixed"


def _ablation(cells: list[dict[str, Any]], claim: str, keys: tuple[str, ...], is_on: Any, is_off: Any
              ) -> dict[str, Any]:
    """Pairs of Big2Small cells equal but for ``keys``: the PSNR gain of ``is_on`` over ``is_off``."""
    b2s = [c for c in _b2s(cells) if _finite(c["metrics"].get("weight_psnr"))]
    rest = lambda c: json.dumps({k: v for k, v in c["configs"][0].items() if k not in keys}, sort_keys=True)  # noqa: E731
    deltas, numbers, evidence = [], [], []
    for on in (c for c in b2s if is_on(c["configs"][0])):
        for off in (c for c in b2s if is_off(c["configs"][0]) and rest(c) == rest(on) and c["model"] == on["model"]):
            d = on["metrics"]["weight_psnr"] - off["metrics"]["weight_psnr"]
            deltas.append(d)
            evidence += [on, off]
            numbers.append(f"{on['model']}: {on['metrics']['weight_psnr']:.2f} vs {off['metrics']['weight_psnr']:.2f} dB "
                           f"({d:+.2f})")
    return _row(claim, _verdict(deltas, MARGIN_DB), evidence, numbers)


def _preprocessing(cells: list[dict[str, Any]]) -> dict[str, Any]:
    return _ablation(cells, "outlier-aware preprocessing improves reconstruction", PREPROCESSING,
                     lambda c: c.get("standardize") and c.get("outliers") != "none",
                     lambda c: not c.get("standardize") and c.get("outliers") == "none")


def _frequency_loss(cells: list[dict[str, Any]]) -> dict[str, Any]:
    return _ablation(cells, "the frequency-aware loss beats MSE alone", LOSS,
                     lambda c: c.get("lambda_grad", 0) > 0 and c.get("lambda_freq", 0) > 0,
                     lambda c: c.get("lambda_grad", 0) == 0 and c.get("lambda_freq", 0) == 0)


def _versus_quantization(cells: list[dict[str, Any]]) -> dict[str, Any]:
    claim = "Big2Small beats quantization at equal bits"
    metric = _quality(cells)
    quant = [c for c in cells if c["stages"] == ["quantize"] and _finite(c["bits"])]
    deltas: list[float] = []
    intervals: list[tuple[float, float]] = []
    numbers: list[str] = []
    evidence: list[dict[str, Any]] = []
    for b in _b2s(cells):
        same = [q for q in quant if q["model"] == b["model"] and metric and _finite(q["metrics"].get(metric))]
        if not (metric and same and _finite(b["bits"]) and _finite(b["metrics"].get(metric))):
            continue
        q = min(same, key=lambda q: abs(q["bits"] / b["bits"] - 1))
        if abs(q["bits"] / b["bits"] - 1) > EQUAL_BITS:
            continue
        d = b["metrics"][metric] - q["metrics"][metric]
        evidence += [b, q]
        text = (f"{b['method']} {b['metrics'][metric]:.2f} vs {q['method']} {q['metrics'][metric]:.2f} % "
                f"{metric} at {b['bits'] / 8e6:.3f} / {q['bits'] / 8e6:.3f} MB ({d:+.2f}")
        paired = _paired(q["record"], b["record"], metric)
        if paired is None:
            deltas.append(d)
        else:
            intervals.append((paired.lo, paired.hi))
            text += f", 95 % CI [{paired.lo:+.2f}, {paired.hi:+.2f}]"
        numbers.append(text + ")")
    if intervals and not deltas:
        return _row(claim, _interval_verdict(intervals), evidence, numbers)
    return _row(claim, _verdict(deltas + [(lo + hi) / 2 for lo, hi in intervals], -QUALITY_TOL), evidence, numbers)


def _paired(base: Mapping[str, Any], new: Mapping[str, Any], metric: str) -> Any:
    """The paired-bootstrap difference ``new − base`` of ``metric`` in display units, or None when the
    two records do not both keep per-example outcomes over the same examples."""
    a, b = per_example_arrays(base).get(metric), per_example_arrays(new).get(metric)
    if a is None or b is None or a.size != b.size:
        return None
    unit = ((new.get("metrics") or {}).get(metric) or {}).get("unit", "")
    # the views of one photo are not independent: resample the clusters either record names
    clusters = clusters_of(new)
    clusters = clusters_of(base) if clusters is None else clusters
    if clusters is not None and clusters.size != a.size:
        return None
    return paired_bootstrap(a, b, scale=sample_scale(unit), clusters=clusters)


def _interval_verdict(intervals: list[tuple[float, float]]) -> str:
    better = [lo > 0 for lo, _ in intervals]
    if all(better):
        return "supported"
    if any(better):
        return "mixed"
    if any(hi < 0 for _, hi in intervals):
        return "refuted"
    return "inconclusive"


def _composition(cells: list[dict[str, Any]]) -> dict[str, Any]:
    claim = "composition stacks (a later stage adds ratio at little quality cost)"
    metric = _quality(cells)
    deltas, numbers, evidence = [], [], []
    for p in (c for c in cells if len(c["stages"]) > 1 and c["stages"][0] == "big2small"):
        alone = [b for b in _b2s(cells) if b["model"] == p["model"] and b["configs"][0] == p["configs"][0]]
        if not (alone and metric and _finite(p["metrics"].get(metric))):
            continue
        b = alone[0]
        loss = b["metrics"][metric] - p["metrics"][metric]
        smaller = _finite(p["bits"]) and _finite(b["bits"]) and p["bits"] < b["bits"]
        deltas.append(QUALITY_TOL - loss if smaller else -math.inf)
        evidence += [p, b]
        numbers.append(f"{' > '.join(p['stages'])}: {b['bits'] / p['bits']:.2f}x fewer bits, {metric} "
                       f"{b['metrics'][metric]:.2f} -> {p['metrics'][metric]:.2f} %")
    return _row(claim, _verdict(deltas, 0.0), evidence, numbers)


def _overhead(cells: list[dict[str, Any]]) -> dict[str, Any]:
    claim = "inference with weights rebuilt from the INRs is about 30 % slower"
    deltas, numbers, evidence = [], [], []
    for b in _b2s(cells):
        dense, deployed = b["metrics"].get("latency_ms"), b["metrics"].get("latency_deployed_ms")
        if not (_finite(dense) and _finite(deployed) and dense > 0):
            continue
        overhead = deployed / dense - 1
        deltas.append(OVERHEAD_MAX - overhead)
        evidence.append(b)
        numbers.append(f"{b['method']}: {deployed:.2f} vs {dense:.2f} ms ({100 * overhead:+.0f} %)")
    return _row(claim, _verdict(deltas, 0.0), evidence, numbers,
                "the paper's 30 % is a GPU figure (an RTX PRO 6000); a CPU evaluates the INR at every weight on "
                "every forward, serially (benchmarks/gpu_check.sh measures it on a GPU)")


def claims_table(frame: pd.DataFrame, records: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """One row per claim (columns ``COLUMNS``) from a run's frame and its records (for the configs)."""
    cells = _cells(frame, records or {}) if len(frame) else []
    rows = [_preprocessing(cells), _frequency_loss(cells), _versus_quantization(cells), _composition(cells),
            _overhead(cells)]
    return pd.DataFrame(rows, columns=COLUMNS)


def write_claims(ctx: ReportContext) -> list[Path]:
    """``claims.md`` and ``claims.json`` in the run folder."""
    table = claims_table(ctx.frame, load_records(ctx.out_dir))
    md = Path(ctx.out_dir) / "claims.md"
    lines = [f"# Big2Small's claims, from the records of {ctx.suite}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(str(r[c]).replace("|", "/") for c in COLUMNS) + " |")
    write_atomic(md, "\n".join(lines) + "\n")
    js = Path(ctx.out_dir) / "claims.json"
    write_atomic(js, json.dumps(table.to_dict(orient="records"), indent=1) + "\n")
    return [md, js]
