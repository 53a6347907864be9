"""suites/segmentation.yaml (issue 18): offline, every registered compressor family on the zoo's cars
UNet, and a slice of it runs end to end with the segmentation metrics in its records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import run_cli

from b2s_bench.plugins import load_plugins

SUITE = Path(__file__).resolve().parents[3] / "suites" / "segmentation.yaml"


def _stage_names(entry: dict[str, object]) -> set[str]:
    stages = entry.get("pipeline", [entry])
    return {str(s["name"]) for s in stages}  # type: ignore[union-attr, index]


def test_the_offline_suite_covers_every_registered_compressor() -> None:
    data = yaml.safe_load(SUITE.read_text())
    named = set().union(*(_stage_names(e) for e in data["compressors"]))
    missing = set(load_plugins().compressors.names()) - named
    assert not missing, (
        f"add {sorted(missing)} to suites/segmentation.yaml (tests/plugins/compressors/test_segmentation_matrix.py shows they run)"
    )


def test_the_offline_suite_validates_with_nothing_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("validate", str(SUITE)) == 0
    out = capsys.readouterr().out
    assert "unet" in out and "distill(student=zoo:cars-unet-small" in out


def test_a_slice_of_the_offline_suite_runs_with_segmentation_metrics(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = run_cli("run", str(SUITE), "--out", str(out), "--quiet", "--device", "cpu", "--no-progress", "-k", "quantize(bits=")
    assert code == 0
    records = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    by_label = {r["label"]: r for r in records}
    assert all(r["status"] == "ok" for r in records), [(r["label"], r.get("error")) for r in records if r["status"] != "ok"]
    assert {"quantize(bits=2)", "identity quantize(bits=32)"} <= set(by_label), sorted(by_label)
    dense, two = by_label["identity quantize(bits=32)"]["metrics"], by_label["quantize(bits=2)"]["metrics"]  # identity = dense
    for metric in ("miou", "dice", "boundary_f", "mask_agreement"):
        assert metric in dense, metric
    assert dense["dice"]["value"] > 90.0  # the shipped UNet on the held-out procedural cars
    assert two["dice"]["value"] < dense["dice"]["value"] - 20.0  # 2-bit weights break it visibly
    assert by_label["identity quantize(bits=32)"]["metrics"]["mask_agreement"]["value"] == 100.0
