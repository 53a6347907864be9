"""suites/imagenet.yaml end to end on a tiny fake ImageNet folder of generated JPEGs, with timm
models at pretrained: false, so the whole path is proven without the real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from b2s_bench_plugins.data.imagenet import imagenet_wnids
from helpers import run_cli
from test_data import fake_imagenet

from b2s_bench.plugins import load_plugins

SUITE = Path(__file__).resolve().parents[3] / "suites" / "imagenet.yaml"


def offline_variant(tmp_path: Path) -> Path:
    """The shipped suite with random-init weights, the fake data, and each compressor's quick settings."""
    data = yaml.safe_load(SUITE.read_text())
    for model in data["models"]:
        model.pop("pretrained", None)
    root = fake_imagenet(tmp_path / "inet", imagenet_wnids()[:3], per_class=2)
    data["dataset"].update(root=str(root), workers=0)
    plugins = load_plugins()
    for entry in data["compressors"]:
        for stage in entry.get("pipeline", [entry]):
            if isinstance(stage, dict):
                stage.pop("device_settings", None)  # quick settings everywhere, whatever the device
                quick = dict(plugins.compressors.get(stage["name"]).quick)
                grid = stage.get("grid", {})
                stage.setdefault("settings", {}).update({k: v for k, v in quick.items() if k not in grid})
    data["runtime"] = {"batch_size": 8, "save_artifacts": False, "weight_limits": False}  # with them: 318 s on 2 cores
    path = tmp_path / "imagenet-fake.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_suite_validates_up_to_missing_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("validate", str(SUITE)) == 3  # no ImageNet here: exit 3 (missing prerequisite) with what to download
    captured = capsys.readouterr()
    assert "resnet18" in captured.out and "ImageNet val not found" in captured.err


def run_variant(tmp_path: Path, pattern: str | None) -> list[dict]:
    path = offline_variant(tmp_path)
    args = ["run", str(path), "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu"]
    assert run_cli(*args, *(["-k", pattern] if pattern else [])) == 0
    return [json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json")]


def test_fake_imagenet_run_resnet18(tmp_path: Path) -> None:
    records = run_variant(tmp_path, "resnet18")
    assert records and all(r["status"] == "ok" for r in records)
    assert {r["model"]["label"] for r in records} == {"resnet18"}
    dense = next(r for r in records if r["label"] == "dense")
    assert dense["metrics"]["top1"]["value"] is not None and dense["dataset"]["name"] == "imagenet"


@pytest.mark.slow
def test_fake_imagenet_run_all_models(tmp_path: Path) -> None:
    records = run_variant(tmp_path, None)
    assert {r["model"]["label"] for r in records} == {"resnet18", "resnet50", "swin-t", "efficientnet-lite0"}
    assert all(r["status"] == "ok" for r in records)
