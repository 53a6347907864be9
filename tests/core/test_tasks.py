"""Task-generic evaluation: a task other than classification, registered by a plugin file through
``b2s_register_tasks``, runs a suite end to end (its dense reference computed once), suites asking
for a metric on a task it does not serve are refused at the metric's line, and records keep working
without the tasks/aggregate fields."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

import b2s_bench as b2s
from b2s_bench.reporting import stats

#: a plugin file: a per-pixel task ("pixels"), a dataset of it, a model source of tiny per-pixel
#: nets, and three metrics of the task: accuracy (mean), agreement with the dense model (read through
#: Evaluation.baseline_outputs, which the task's reference reduces to argmax predictions) and a
#: perplexity (exp of the mean per-image NLL).
PLUGIN = """
import dataclasses
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

import b2s_bench as b2s
from b2s_bench.metrics import run_model

CLASSES, SIZE, N = 3, 6, 8


def _count(what):
    with open(os.environ["TASKS_TEST_LOG"], "a") as f:
        f.write(what + "\\n")


def run(model, data, device, batch_size):
    _count("run")
    logits, masks = run_model(model, data, device, batch_size)
    return {"pixel_logits": logits, "masks": masks}


def reference(outputs):
    _count("reference")
    return {"predictions": outputs["pixel_logits"].argmax(1).to(torch.uint8), "masks": outputs["masks"]}


@dataclasses.dataclass(frozen=True)
class ScenesConfig:
    n: int = N


def build(config, model):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(config.n, 3, SIZE, SIZE, generator=gen)
    y = torch.randint(0, CLASSES, (config.n, SIZE, SIZE), generator=gen)
    return b2s.sources.LoadedData(
        lambda bs: [(x[i : i + bs], y[i : i + bs]) for i in range(0, config.n, bs)],
        config.n, True, f"scenes-{config.n}", task="pixels")


def build_model(request):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, CLASSES, 1))
    return b2s.sources.LoadedModel(module, (3, SIZE, SIZE), CLASSES, "random-init-seed0")


def pixel_accuracy(ev):
    hits = (ev.outputs["pixel_logits"].argmax(1) == ev.outputs["masks"]).float().mean(dim=(1, 2))
    ev.per_example["pixel_accuracy"] = hits
    return 100.0 * float(hits.mean())


def pixel_agreement(ev):
    same = ev.outputs["pixel_logits"].argmax(1) == ev.baseline_outputs["predictions"]
    per = same.float().mean(dim=(1, 2))
    ev.per_example["pixel_agreement"] = per
    return 100.0 * float(per.mean())


def pixel_perplexity(ev):
    nll = F.cross_entropy(ev.outputs["pixel_logits"], ev.outputs["masks"], reduction="none").mean(dim=(1, 2))
    ev.per_example["pixel_perplexity"] = nll
    return float(torch.exp(nll.mean()))


PIXELS = frozenset({"pixels"})


@b2s.hookimpl
def b2s_register_tasks(register):
    register(b2s.TaskSpec("pixels", run, "one class per pixel", reference=reference))


@b2s.hookimpl
def b2s_register_datasets(register):
    register(b2s.DatasetSpec("scenes", ScenesConfig, build, task="pixels", description="noise scenes"))


@b2s.hookimpl
def b2s_register_models(register):
    register(b2s.ModelSource("pixnets", build_model, lambda pattern: ["tiny"]))


@b2s.hookimpl
def b2s_register_metrics(register):
    register(b2s.MetricSpec("pixel_accuracy", "%", True, pixel_accuracy, frozenset({"labels"}), tasks=PIXELS,
                            roles=frozenset({"default", "primary"})))
    register(b2s.MetricSpec("pixel_agreement", "%", True, pixel_agreement, frozenset({"data"}), tasks=PIXELS))
    register(b2s.MetricSpec("pixel_perplexity", "", False, pixel_perplexity, frozenset({"labels"}), tasks=PIXELS,
                            aggregate="exp_mean"))
"""

SUITE = """suite: pixels
models:
  - name: pixnets:tiny
dataset: {name: scenes}
compressors:
  - {name: quantize, grid: {bits: [4, 8]}}
metrics:
  - pixel_accuracy
  - pixel_agreement
  - pixel_perplexity
  - bits
runtime: {batch_size: 3}
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "pixels_plugin.py"
    path.write_text(PLUGIN)
    monkeypatch.setenv("TASKS_TEST_LOG", str(tmp_path / "calls.log"))
    monkeypatch.chdir(tmp_path)
    return path


def _calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().split() if log.is_file() else []


def test_a_plugin_task_runs_a_suite_end_to_end_with_one_dense_reference(plugin: Path, tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SUITE)
    flags = ["--plugin", str(plugin)]
    assert run_cli(*flags, "run", "s.yaml", "--out", "run", "--no-progress", "--quiet", "--executor", "inline") == 0
    # three cells (dense, 4 and 8 bits): each runs its model once; the dense reference once for all
    assert sorted(_calls(tmp_path)) == ["reference", "run", "run", "run", "run"]
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "run" / "cells").glob("*.json"))]
    assert [r["status"] for r in records] == ["ok"] * 3
    for r in records:
        assert r["dataset"]["task"] == "pixels"
        m = r["metrics"]
        assert m["pixel_accuracy"]["tasks"] == ["pixels"] and m["bits"]["tasks"] is None
        assert m["pixel_perplexity"]["aggregate"] == "exp_mean" and m["pixel_accuracy"]["aggregate"] == "mean"
        assert 0.0 <= m["pixel_accuracy"]["value"] <= 100.0 and m["pixel_perplexity"]["value"] > 1.0
    by_label = {r["label"]: r for r in records}
    dense = by_label["dense"]
    assert dense["metrics"]["pixel_agreement"]["value"] == pytest.approx(100.0)  # against its own reduced reference
    assert 90.0 < by_label["quantize(bits=4)"]["metrics"]["pixel_agreement"]["value"] < 100.0
    # reports know exp_mean from the records: the perplexity's interval is exp of resampled mean NLLs
    from b2s_bench.reporting.tables import load_frame

    frame, metas, _ = load_frame(tmp_path / "run")
    meta = next(m for m in metas if m.name == "pixel_perplexity")
    assert meta.aggregate == "exp_mean"
    row = frame[frame["cell_id"] == dense["cell_id"]].iloc[0]
    value = dense["metrics"]["pixel_perplexity"]["value"]
    assert row["ci_lo:pixel_perplexity"] <= value <= row["ci_hi:pixel_perplexity"]
    assert row["ci_lo:pixel_perplexity"] > 1.0
    # a second run into another folder computes its cells again but reuses the cached dense reference
    assert run_cli(*flags, "run", "s.yaml", "--out", "run2", "--no-progress", "--quiet", "--executor", "inline") == 0
    assert _calls(tmp_path).count("reference") == 1


def test_validate_refuses_top1_on_a_dataset_of_another_task_naming_the_line(
    plugin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = SUITE.replace("  - bits\n", "  - bits\n  - top1\n")
    (tmp_path / "s.yaml").write_text(suite)
    assert run_cli("--plugin", str(plugin), "validate", "s.yaml") == 2
    err = capsys.readouterr().err
    line = suite.splitlines().index("  - top1") + 1
    assert f"s.yaml:{line} metrics[4]: metric 'top1' serves classification only" in err
    assert "model 'pixnets:tiny' is evaluated on a pixels dataset (dataset on line 4)" in err
    assert "metrics that serve pixels: pixel_accuracy, pixel_agreement, pixel_perplexity, and the size" in err


def test_a_model_entrys_own_dataset_is_checked_and_default_metrics_follow_the_task(plugin: Path, tmp_path: Path) -> None:
    plugins = b2s.execution.load_plugins(files=[str(plugin)])
    from b2s_bench.errors import SuiteError
    from b2s_bench.suites.load import load_suite

    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(
        "suite: mixed\nmodels:\n  - name: pixnets:tiny\n    dataset: scenes\ndataset: random\n"
        "compressors: [{name: quantize, bits: 8}]\nmetrics: [agreement]\n"
    )
    with pytest.raises(
        SuiteError,
        match=r"mixed.yaml:7 metrics\[0\]: .*model 'pixnets:tiny' is evaluated on a pixels dataset \(models\[0\]\.dataset on line 4\)",
    ):
        load_suite(mixed, plugins)
    (tmp_path / "default.yaml").write_text(
        "suite: d\nmodels: [pixnets:tiny]\ndataset: scenes\ncompressors: [{name: quantize, bits: 8}]\n"
    )
    metrics = load_suite(tmp_path / "default.yaml", plugins).metrics
    assert "pixel_accuracy" in metrics and "bits" in metrics and "top1" not in metrics and "agreement" not in metrics


def test_a_suite_that_mixes_tasks_gives_a_model_its_own_metrics(plugin: Path, tmp_path: Path) -> None:
    """A classifier and a pixel model in one suite (the paper's tables: ImageNet and Carvana): the
    model entry's own `metrics:` replaces the suite's for its cells; its metrics are checked against its
    own task, at their own line; the run header lists every metric, and cells of the other models keep
    the suite's (and their ids)."""
    plugins = b2s.execution.load_plugins(files=[str(plugin)])
    from b2s_bench.errors import SuiteError
    from b2s_bench.suites.cells import expand
    from b2s_bench.suites.load import load_suite

    text = (
        "suite: mixed\nmodels:\n  - name: zoo:fmnist-cnn\n  - name: pixnets:tiny\n    dataset: scenes\n"
        "    metrics: [pixel_accuracy, bits]\ndataset: fashion-mnist\n"
        "compressors: [{name: quantize, bits: 8}]\nmetrics: [top1, bits]\nreport: {primary: pixel_accuracy}\n"
    )
    (tmp_path / "mixed.yaml").write_text(text)
    suite = load_suite(tmp_path / "mixed.yaml", plugins)
    assert suite.metrics == ("top1", "bits") and suite.models[1].metrics == ("pixel_accuracy", "bits")
    by_model = {c.model.label: c.metrics for c in expand(suite, plugins, "cpu")}
    assert by_model == {"zoo:fmnist-cnn": ("top1", "bits"), "pixnets:tiny": ("pixel_accuracy", "bits")}
    alone = tmp_path / "alone.yaml"  # the classifier's cells are the same as in a suite of its own
    alone.write_text(
        text.replace("  - name: pixnets:tiny\n    dataset: scenes\n    metrics: [pixel_accuracy, bits]\n", "").replace(
            "report: {primary: pixel_accuracy}\n", ""
        )
    )
    assert {c.id for c in expand(load_suite(alone, plugins), plugins, "cpu")} < {c.id for c in expand(suite, plugins, "cpu")}
    (tmp_path / "bad.yaml").write_text(text.replace("metrics: [pixel_accuracy, bits]", "metrics: [bits, top1]"))
    with pytest.raises(SuiteError, match=r"bad.yaml:6 models\[1\]\.metrics\[1\]: metric 'top1' serves classification only"):
        load_suite(tmp_path / "bad.yaml", plugins)


def test_a_dataset_of_an_unregistered_task_is_reported_and_refused(tmp_path: Path) -> None:
    path = tmp_path / "orphan.py"
    path.write_text(
        "import dataclasses\nimport b2s_bench as b2s\n\n@dataclasses.dataclass(frozen=True)\nclass C:\n    n: int = 1\n\n"
        "@b2s.hookimpl\ndef b2s_register_datasets(register):\n"
        "    register(b2s.DatasetSpec('orphans', C, lambda c, m: None, task='depth'))\n\n"
        "@b2s.hookimpl\ndef b2s_register_metrics(register):\n"
        "    register(b2s.MetricSpec('depth_error', 'm', False, lambda ev: 0.0, tasks=frozenset({'depth'})))\n"
    )
    plugins = b2s.execution.load_plugins(files=[str(path)])
    errors = [f.error for f in plugins.failures if f.name == "orphan"]
    assert any("dataset 'orphans' (plugin 'orphan') declares task 'depth', which no plugin registers" in e for e in errors)
    assert any("metric 'depth_error' serves depth, which no plugin registers" in e for e in errors)
    from b2s_bench.errors import SuiteError
    from b2s_bench.suites.load import load_suite

    (tmp_path / "s.yaml").write_text("suite: o\nmodels: [zoo:mlp]\ndataset: orphans\ncompressors: [{name: quantize, bits: 8}]\n")
    with pytest.raises(SuiteError, match="plugin 'orphan'.*declares task 'depth'"):
        load_suite(tmp_path / "s.yaml", plugins)


def test_specs_check_their_task_fields() -> None:
    with pytest.raises(ValueError, match="dataset 'd': task 'Depth Maps' is no task name"):
        b2s.DatasetSpec("d", object, lambda c, m: None, task="Depth Maps")
    with pytest.raises(ValueError, match="task name 'Pixel Labels'"):
        b2s.TaskSpec("Pixel Labels", lambda *a: {})
    with pytest.raises(ValueError, match="aggregate 'median'"):
        b2s.MetricSpec("m", "", True, lambda ev: 0.0, aggregate="median")
    with pytest.raises(ValueError, match="non-empty frozenset of task names"):
        b2s.MetricSpec("m", "", True, lambda ev: 0.0, tasks="classification")  # type: ignore[arg-type]


def test_exp_mean_intervals_transform_the_resampled_means_by_hand() -> None:
    # per-example NLLs 0 and log 4: a resample's mean is 0, log 2 or log 4 (probabilities 1/4, 1/2,
    # 1/4), so its perplexity is 1, 2 or 4 and the 2.5 % and 97.5 % quantiles are 1 and 4 exactly
    x = np.array([0.0, math.log(4.0)])
    ci = stats.pooled_ci(x, aggregate="exp_mean")
    assert (ci.estimate, ci.lo, ci.hi) == pytest.approx((2.0, 1.0, 4.0))
    plain = stats.pooled_ci(x)  # the same resampled means, untransformed
    assert (ci.lo, ci.hi) == pytest.approx((math.exp(plain.lo), math.exp(plain.hi)))
    # paired over 4 examples, a's NLL 0 everywhere, b's log 9 on two of them: k ~ Binomial(4, 1/2)
    # draws of a log 9 give exp(mean b) − exp(mean a) = 9^(k/4) − 1; k = 0 and k = 4 each have
    # probability 1/16 > 2.5 %, so the interval is [0, 8]; the estimate is 9^(1/2) − 1 = 2, whereas
    # exp of the mean difference would be 3 and a difference of the endpoints something else again
    a, b = np.zeros(4), np.array([0.0, 0.0, math.log(9.0), math.log(9.0)])
    d = stats.pooled_paired(a, b, aggregate="exp_mean")
    assert (d.diff, d.lo, d.hi) == pytest.approx((2.0, 0.0, 8.0))
    assert stats.pooled_paired(a, b).diff == pytest.approx(math.log(9.0) / 2)  # "mean" is unchanged
    far = stats.pooled_independent(a, b, aggregate="exp_mean")
    assert (far.diff, far.lo, far.hi) == pytest.approx((2.0, 0.0, 8.0))
    assert stats.aggregated(np.array([0.0, math.log(2.0)]), "exp_mean", 100.0) == pytest.approx([100.0, 200.0])
    assert stats.aggregated(0.5, "mean", 100.0) == 50.0


def test_a_record_without_tasks_or_aggregate_reads_as_mean() -> None:
    from b2s_bench.reporting.tables import metric_meta, per_example_arrays
    from b2s_bench.store import samples

    hits = np.array([True, False, True, True])
    old = {
        "cell_id": "x",
        "metrics": {"top1": {"value": 75.0, "unit": "%", "higher_is_better": True, "kind": "quality"}},
        "per_example": {"top1": samples.encode(hits)},
    }
    (meta,) = metric_meta([old])
    assert meta.aggregate == "mean"
    assert list(per_example_arrays(old)) == ["top1"]


def test_classification_references_keep_the_cache_key_they_had_before_tasks(tiny_suite: Path, tmp_path: Path) -> None:
    """Dense outputs cached before tasks existed (same file name, same {logits, labels} content) are reused."""
    import hashlib
    import os

    import torch

    from b2s_bench.suites.cells import expand
    from b2s_bench.suites.load import load_suite

    assert run_cli("run", str(tiny_suite), "--out", str(tmp_path / "run"), "--quiet", "--executor", "inline") == 0
    plugins = b2s.execution.load_plugins()
    suite = load_suite(tiny_suite, plugins)
    cell = expand(suite, plugins, "cpu")[0]
    record = json.loads((tmp_path / "run" / "cells" / f"{cell.id}.json").read_text())
    assert record["dataset"]["task"] == "classification"
    parts = [
        cell.fingerprint["model"],
        cell.fingerprint["dataset"],
        record["dataset"]["data_fingerprint"],
        suite.runtime.batch_size,
        "cpu",
        torch.__version__,
    ]  # the key's parts as they were before tasks
    key = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]
    cached = Path(os.environ["B2S_BENCH_CACHE"]) / "reference" / f"{key}.pt"
    assert [p.name for p in cached.parent.glob("*.pt")] == [cached.name]
    assert set(torch.load(cached, weights_only=True)) == {"logits", "labels"}
