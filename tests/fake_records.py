"""Synthetic records for the reporting tests: records as the runner writes them, with per-example outcomes
and rate-distortion details, made without running anything."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from b2s_bench.store import samples
from b2s_bench.store.records import SCHEMA, fingerprint_id, record_problems, write_record

#: name -> (unit, higher_is_better, kind, roles, rank, identity_target) of the metrics synthetic records carry
SPECS: dict[str, tuple[str, bool, str, list[str], int, float | None]] = {
    "top1": ("%", True, "quality", ["default", "primary"], 10, None),
    "agreement": ("%", True, "quality", ["default", "primary"], 20, 99.999),
    "kl": ("nats", False, "quality", [], 100, None),
    "miou": ("%", True, "quality", ["default", "primary"], 10, None),
    "dice": ("%", True, "quality", ["default", "primary"], 15, None),
    "mask_agreement": ("%", True, "quality", ["default", "primary"], 20, 99.999),
    "bits": ("bits", False, "size", ["default"], 100, None),
    "ratio": ("x", True, "size", ["default"], 100, None),
    "weight_rel_error": ("", False, "weights", [], 100, 1e-6),
    "solver_gap": ("", False, "weights", ["check"], 100, None),
}


def outcomes(rate: float, n: int, seed: int = 0) -> np.ndarray:
    """``n`` right/wrong outcomes, exactly round(rate · n) of them right, at seeded positions."""
    out = np.zeros(n, bool)
    out[np.random.default_rng(seed).permutation(n)[: round(rate * n)]] = True
    return out


def make_record(
    method: str = "quantize(bits=4)",
    family: str = "quantization",
    *,
    model: str = "tiny:cnn",
    track: str = "data-free",
    seed: int = 0,
    bits: int = 1_000_000,
    baseline_bits: int = 8_000_000,
    values: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    status: str = "ok",
    identity: bool = False,
    data: str = "data-1",
    num_classes: int | None = None,
    suite: str = "s",
    commit: str = "abc1234567",
) -> dict[str, Any]:
    """A valid record. ``values``: metric -> a number, or a bool/float array of per-example outcomes
    (stored in ``per_example``; the value is their mean, × 100 for a metric in %)."""
    metrics, per_example = {}, {}
    given = {"bits": float(bits), "ratio": baseline_bits / bits, **(values or {})}
    for name, v in given.items():
        unit, hib, kind, roles, rank, target = SPECS.get(name, ("", True, "quality", [], 100, None))
        if isinstance(v, np.ndarray):
            per_example[name] = samples.encode(v)
            v = float(v.mean()) * (100.0 if unit == "%" else 1.0)
        metrics[name] = {
            "value": v,
            "unit": unit,
            "higher_is_better": hib,
            "kind": kind,
            "roles": roles,
            "rank": rank,
            "identity_target": target,
            "description": f"{name} of the cell",
        }
    fingerprint = {"model": model, "method": method, "seed": seed, "suite": suite, "bits": bits, "data": data}
    stage = {"name": method.split("(")[0], "version": "1", "family": family, "track": track, "config": {}}
    rec = {
        "schema": SCHEMA,
        "cell_id": fingerprint_id(fingerprint),
        "fingerprint": fingerprint,
        "suite": suite,
        "status": status,
        "label": method,
        "track": track,
        "family": family,
        "seed": seed,
        "model": {"name": model, "label": model, **({"num_classes": num_classes} if num_classes else {})},
        "dataset": {"name": "random", "options": {}, "examples": 100, "data_fingerprint": data},
        "compressor": {"pipeline": [] if family == "dense" else [stage], "identity": identity},
        "metrics": metrics if status == "ok" else {},
        "size": {
            "total_bits": int(bits),
            "baseline_bits": baseline_bits,
            "ratio_model": baseline_bits / bits,
            "ratio_layers": baseline_bits / bits,
            "layers_bits": int(bits),
            "layers_baseline_bits": baseline_bits,
        }
        if status == "ok"
        else {},
        "timings": {"total": 1.0},
        "details": details or {},
        "environment": {"device": "cpu", "git_commit": commit},
        "error": None if status == "ok" else {"type": "RuntimeError", "message": "boom\nmore", "traceback": ""},
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-02T00:01:00+00:00",
    }
    if per_example and status == "ok":
        rec["per_example"] = per_example
    assert record_problems(rec) == []
    return rec


def write_run(
    folder: Path,
    records: Sequence[dict[str, Any]],
    suite: str = "s",
    report: dict[str, Any] | None = None,
    metrics: Sequence[str] = ("top1", "bits", "ratio"),
    description: str = "a test run",
) -> Path:
    """A run folder: the records and a run.json listing them."""
    for rec in records:
        write_record(folder, rec)
    (folder / "run.json").write_text(
        json.dumps(
            {
                "suite": suite,
                "description": description,
                "command": f"b2s-bench run {suite}.yaml",
                "report": report or {},
                "metrics": list(metrics),
                "cells": [r["cell_id"] for r in records],
            }
        )
    )
    return folder


def rd_details(rate: float, rel_mse: float, variance_ratio: float = 1.0, below: bool | None = None) -> dict[str, Any]:
    """``details["rate_distortion"]`` as the limits plugin writes it (energy 2.0)."""
    model = {
        "rate": rate,
        "mse": 2.0 * rel_mse,
        "energy": 2.0,
        "variance_ratio": variance_ratio,
        "bound_mse": 2.0 * variance_ratio * 2 ** (-2 * rate),
    }
    if below is not None:
        model["below_limit"] = below
    return {"rate_distortion": {"tensors": {}, "model": model}}
