"""suites/paper.yaml: it validates offline up to the missing data, and runs end to end on random-init
models and a tiny fake ImageNet folder (val and train), with each compressor's quick settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from b2s_bench_plugins.data.imagenet import imagenet_wnids
from helpers import run_cli
from test_data import fake_imagenet

from b2s_bench.plugins import load_plugins

SUITE = Path(__file__).resolve().parents[3] / "suites" / "paper.yaml"


def offline_variant(tmp_path: Path, models: list[str]) -> Path:
    """The shipped suite on random-init ``models`` (labels), fake data, quick settings everywhere."""
    data = yaml.safe_load(SUITE.read_text())
    data["models"] = [m for m in data["models"] if m["label"] in models]
    for model in data["models"]:
        model.pop("pretrained", None)
    data["compressors"] = [e for e in data["compressors"] if set(e.get("models", models)) & set(models)]
    wnids = imagenet_wnids()[:3]
    root = fake_imagenet(tmp_path / "inet", wnids, per_class=2)
    train = fake_imagenet(tmp_path / "inet-train", wnids, per_class=2)
    (train / "val").rename(root / "train")
    data["dataset"].update(root=str(root), workers=0)
    plugins = load_plugins()
    for entry in data["compressors"]:
        for stage in entry.get("pipeline", [entry]):
            stage.pop("device_settings", None)
            quick = dict(plugins.compressors.get(stage["name"]).quick)
            stage.setdefault("settings", {}).update(quick)
    data["activations"].update(samples=4, synthetic_iterations=2)
    for entry in data["compressors"]:
        if isinstance(entry.get("activations"), dict):
            entry["activations"].update(samples=4, synthetic_iterations=2)
    data["runtime"] = {"batch_size": 8, "save_artifacts": False, "weight_limits": False}
    path = tmp_path / "paper-fake.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_suite_lists_every_table_and_names_the_missing_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("validate", str(SUITE)) == 3
    out = capsys.readouterr()
    for label in (
        "W6A6",
        "dsg(bits=6)",
        "squant(bits=6)",
        "udfc(bits=6)",
        "riem(bits=4) W4A4",
        "riem(bits=4) W4A8",
        "+ SVD + 60 % pruning + 6-bit",
    ):
        assert label in out.out, label
    assert "ImageNet val not found" in out.err


def test_fake_imagenet_run_of_the_resnet18_tables(tmp_path: Path) -> None:
    path = offline_variant(tmp_path, ["resnet18"])
    out = tmp_path / "run"
    assert run_cli("run", str(path), "--out", str(out), "--quiet", "--device", "cpu", "-k", "W6A6") == 0
    records = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    labels = {r["label"] for r in records}
    for method in ("dsg(", "squant(", "udfc(", "rtn quantize(", "big2small("):  # quick settings join the labels
        assert any(label.startswith(method) and label.endswith(" W6A6") for label in labels), (method, labels)
    assert all(r["status"] == "ok" for r in records), [(r["label"], r.get("error")) for r in records if r["status"] != "ok"]
    dsg = next(r for r in records if r["label"].startswith("dsg"))
    assert dsg["details"]["activations"]["inputs"]["kind"] == "the method's own synthetic inputs"
    assert run_cli("report", str(out)) == 0
    assert "SQuant W6A6" in (out / "paper.md").read_text()


@pytest.mark.slow
def test_fake_imagenet_run_of_every_table(tmp_path: Path) -> None:
    path = offline_variant(tmp_path, ["resnet18", "resnet50", "swin-t"])
    out = tmp_path / "run"
    assert run_cli("run", str(path), "--out", str(out), "--quiet", "--device", "cpu") == 0
    records = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert {r["model"]["label"] for r in records} == {"resnet18", "resnet50", "swin-t"}
    assert all(r["status"] in ("ok", "not-applicable") for r in records)
