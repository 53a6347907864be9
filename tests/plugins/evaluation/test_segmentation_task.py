"""The segmentation task and metrics through a real Evaluation and through the runner: the task's compact
outputs, bounded CPU batches, per-image outcomes, the preview in the record, and a suite end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from b2s_bench_plugins.evaluation import segmentation_eval, segmentation_preview, segmentation_scores
from helpers import run_cli
from torch import nn

from b2s_bench import Compressed
from b2s_bench.metrics import Evaluation, NotApplicable
from b2s_bench.plugins import Plugins
from b2s_bench.sources import LoadedData, LoadedModel

N, H, W = 5, 20, 30


class Threshold(nn.Module):
    """Binary logits: the first input channel minus ``shift`` (foreground where it exceeds the shift)."""

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] - self.shift


def toy_data(labeled: bool = True, preview: int | None = None) -> LoadedData:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(N, 3, H, W, generator=gen)
    masks = (images[:, 0] > 0.3).long()  # the truth: a threshold at 0.3
    masks[:, :2, :2] = 255  # an ignored corner

    def batches(bs: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [(images[i : i + bs], masks[i : i + bs] if labeled else None) for i in range(0, N, bs)]

    return LoadedData(batches, N, labeled, "toy-seg", task="segmentation", preview=preview or 0)


def evaluation(plugins: Plugins, shift: float, data: LoadedData, batch_size: int = 2) -> Evaluation:
    task = plugins.tasks.get("segmentation")
    dense = LoadedModel(Threshold(0.0), (3, H, W), 1, "toy")
    return Evaluation(
        Threshold(shift),
        dense,
        Compressed.from_codes(nn.Identity(), {}),
        data,
        torch.device("cpu"),
        batch_size,
        lambda: task.run(dense.module, data, torch.device("cpu"), batch_size),
        {"compress": 0.0},
        task=task,
    )


def test_outputs_are_compact_and_do_not_depend_on_batches(plugins: Plugins, monkeypatch: pytest.MonkeyPatch) -> None:
    data = toy_data()
    out = evaluation(plugins, 0.3, data).outputs
    assert out["pred"].dtype == torch.uint8 and out["pred"].shape == (N, H, W)
    assert out["masks"].dtype == torch.uint8 and int(out["classes"]) == 2 and int(out["preview_index"]) == 0
    assert out["preview_image"].dtype == torch.uint8 and out["preview_image"].shape == (H, W, 3)
    monkeypatch.setattr(segmentation_eval, "CPU_BATCH_PIXELS", H * W)  # one image a forward pass
    again = evaluation(plugins, 0.3, data, batch_size=4).outputs
    assert all(torch.equal(out[k], again[k]) for k in out)


def metric(plugins: Plugins, name: str, ev: Evaluation) -> float:
    return float(plugins.metrics.get(name).compute(ev))


def test_metrics_are_means_of_per_image_scores(plugins: Plugins) -> None:
    ev = evaluation(plugins, 0.3, toy_data())  # the compressed model is the truth's threshold: perfect
    assert metric(plugins, "miou", ev) == 100.0 and metric(plugins, "dice", ev) == 100.0
    assert metric(plugins, "macc", ev) == 100.0 and metric(plugins, "boundary_f", ev) == 100.0
    assert ev.per_example["miou"].shape == (N,)  # one outcome per image, not per pixel
    ev = evaluation(plugins, 0.0, toy_data())  # the dense model's threshold: too much foreground
    pred, truth = ev.outputs["pred"], ev.outputs["masks"]
    scores = segmentation_scores.image_scores(segmentation_scores.confusion(pred, truth, 2))
    for name, key in (("miou", "iou"), ("macc", "acc"), ("dice", "dice")):
        value = metric(plugins, name, ev)
        assert 0 < value < 100 and value == pytest.approx(100 * float(scores[key].mean()))
        assert torch.allclose(ev.per_example[name].double(), scores[key], atol=1e-6)
    assert metric(plugins, "mask_agreement", ev) == 100.0  # the same masks as the dense model
    ev = evaluation(plugins, 0.6, toy_data())
    assert metric(plugins, "mask_agreement", ev) < 100.0


def test_the_record_keeps_a_preview_of_the_named_example(plugins: Plugins) -> None:
    ev = evaluation(plugins, 0.6, toy_data(preview=3))
    metric(plugins, "miou", ev)
    entry: dict[str, Any] = ev.details["preview"]
    assert entry["task"] == "segmentation" and entry["example"] == 3 and entry["classes"] == 2
    assert np.array_equal(segmentation_preview.decode_mask(entry["mask"]), ev.outputs["pred"][3].numpy())
    assert np.array_equal(segmentation_preview.decode_mask(entry["truth"]), ev.outputs["masks"][3].numpy())
    assert segmentation_preview.decode_image(entry["image"]).shape == (H, W, 3)
    assert len(json.dumps(entry)) < 4000  # a few KB in the record
    with pytest.raises(ValueError, match="preview = 9 is not an eval example index"):
        evaluation(plugins, 0.0, toy_data(preview=9)).outputs  # noqa: B018


def test_unlabeled_data_scores_agreement_only(plugins: Plugins) -> None:
    ev = evaluation(plugins, 0.6, toy_data(labeled=False))
    with pytest.raises(NotApplicable, match="no masks.*mask_agreement"):
        metric(plugins, "miou", ev)
    assert 0 < metric(plugins, "mask_agreement", ev) < 100
    assert "truth" not in ev.details["preview"]


def test_bad_masks_are_refused_with_the_contract(plugins: Plugins) -> None:
    images = torch.zeros(2, 3, H, W)

    def run(masks: torch.Tensor) -> None:
        data = LoadedData(lambda bs: [(images, masks)], 2, True, "bad", task="segmentation")
        evaluation(plugins, 0.0, data).outputs  # noqa: B018

    with pytest.raises(ValueError, match="masks N×H×W at the images' resolution"):
        run(torch.zeros(2, H // 2, W // 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class ids"):
        run(torch.zeros(2, H, W))
    with pytest.raises(ValueError, match="class id 300"):
        run(torch.full((2, H, W), 300))


PLUGIN = """
import dataclasses
import numpy as np
import torch
import torch.nn as nn
import b2s_bench as b2s

N, H, W = 6, 16, 24


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    n: int = N


def build(config, model):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(config.n, 3, H, W, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0.2).long()
    return b2s.sources.LoadedData(
        lambda bs: [(x[i : i + bs], y[i : i + bs]) for i in range(0, config.n, bs)],
        config.n, True, f"toyseg-{config.n}", task="segmentation", clusters=np.arange(config.n) // 2)


def build_model(request):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
    return b2s.sources.LoadedModel(module, (3, H, W), 1, "random-init-seed0")


@b2s.hookimpl
def b2s_register_datasets(register):
    register(b2s.DatasetSpec("toyseg", ToyConfig, build, task="segmentation"))


@b2s.hookimpl
def b2s_register_models(register):
    register(b2s.ModelSource("segnets", build_model, lambda pattern: ["tiny"]))
"""

SUITE = """suite: seg
models:
  - name: segnets:tiny
dataset: {name: toyseg}
compressors:
  - {name: quantize, grid: {bits: [2, 8]}}
runtime: {batch_size: 4}
"""


def test_a_segmentation_suite_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "toy_plugin.py").write_text(PLUGIN)
    (tmp_path / "s.yaml").write_text(SUITE)
    monkeypatch.chdir(tmp_path)
    flags = ["--plugin", str(tmp_path / "toy_plugin.py")]
    assert run_cli(*flags, "run", "s.yaml", "--out", "run", "--no-progress", "--quiet", "--executor", "inline") == 0
    records = {r["label"]: r for r in (json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json"))}
    assert sorted(records) == ["dense", "quantize(bits=2)", "quantize(bits=8)"]
    for rec in records.values():
        assert rec["status"] == "ok"
        # no `metrics:` in the suite: the segmentation defaults and the size metrics
        assert {"miou", "macc", "dice", "mask_agreement", "bits"} <= set(rec["metrics"]) and "top1" not in rec["metrics"]
        assert rec["metrics"]["miou"]["tasks"] == ["segmentation"] and rec["per_example"]["miou"]["n"] == 6
        assert rec["details"]["preview"]["example"] == 0 and len(json.dumps(rec["details"]["preview"])) < 4000
    assert records["dense"]["metrics"]["mask_agreement"]["value"] == 100.0
    assert records["quantize(bits=2)"]["metrics"]["mask_agreement"]["value"] < 100.0
    page = (tmp_path / "run" / "leaderboard.html").read_text()
    assert "<h2>Masks</h2>" in page and "alt='masks: segnets:tiny on toyseg'" in page
