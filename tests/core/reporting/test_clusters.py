"""Clusters of examples and fit seeds in reports rebuilt from records: intervals resample whole
clusters (the 9 views of one photo) and seeds, and every verdict follows its interval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_records import make_record, outcomes, write_run
from helpers import run_cli

from b2s_bench.reporting import stats
from b2s_bench.reporting.compare import compare_runs
from b2s_bench.reporting.tables import load_frame, methods
from b2s_bench.reporting.theory import equal_bits
from b2s_bench.store import samples

PHOTOS, VIEWS = 8, 9
CLUSTERS = np.tile(np.arange(PHOTOS), VIEWS)  # view v of photo p is example v · 8 + p, as the photo set orders them


def _views(photo_right: list[bool]) -> np.ndarray:
    """Every view as right as its photo (perfectly correlated views)."""
    return np.tile(np.array(photo_right), VIEWS)


def _clustered(rec: dict[str, Any], clusters: np.ndarray = CLUSTERS) -> dict[str, Any]:
    rec["dataset"]["clusters"] = samples.encode_clusters(clusters)
    return rec


def _agreement(metas: list[Any]) -> Any:
    return next(m for m in metas if m.name == "agreement")


def test_report_intervals_resample_the_photos_a_record_names(tmp_path: Path) -> None:
    right = _views([True] * 4 + [False] * 4)
    run = write_run(
        tmp_path / "run",
        [
            _clustered(make_record("quantize(bits=6)", values={"agreement": right})),
            make_record("quantize(bits=5)", values={"agreement": right}, data="data-2"),  # no clusters: views independent
        ],
        metrics=("agreement", "bits", "ratio"),
    )
    frame, metas, _ = load_frame(run)
    by_method = frame.set_index("method")
    # by hand (tests/core/reporting/test_stats.py): 4 of 8 photos right, resampled: [12.5, 87.5]
    assert (by_method.loc["quantize(bits=6)", "ci_lo:agreement"], by_method.loc["quantize(bits=6)", "ci_hi:agreement"]) == (
        12.5,
        87.5,
    )
    lo, hi = by_method.loc["quantize(bits=5)", "ci_lo:agreement"], by_method.loc["quantize(bits=5)", "ci_hi:agreement"]
    assert hi - lo < 30  # the same outcomes as 72 independent examples: less than half as wide
    table = methods(frame, metas).set_index("method")
    assert table.loc["quantize(bits=6)", "ci_lo:agreement"] == 12.5
    assert np.array_equal(table.loc["quantize(bits=6)", "clusters"], CLUSTERS)


def test_broken_cluster_ids_name_the_record(tmp_path: Path) -> None:
    rec = _clustered(make_record(values={"agreement": _views([True] * 8)}), np.arange(10))
    run = write_run(tmp_path / "run", [rec], metrics=("agreement",))
    with pytest.raises(Exception, match=f"record {rec['cell_id']}: dataset.clusters holds 10 ids.*rerun the cell"):
        load_frame(run)


def test_equal_bits_pair_on_clustered_views_is_not_significant(tmp_path: Path) -> None:
    # b is right on all 9 views of 2 photos where a is wrong: 18 discordant views, one way (McNemar
    # p < 1e-4), but only 2 of 8 photos; resampling photos the interval reaches 0
    a = _clustered(make_record("a(bits=6)", values={"agreement": _views([False] * 2 + [True] * 6)}))
    b = _clustered(make_record("b(bits=6)", values={"agreement": _views([True] * 8)}))
    frame, metas, _ = load_frame(write_run(tmp_path / "run", [a, b], metrics=("agreement",)))
    (row,) = equal_bits(frame, _agreement(metas)).to_dict("records")
    assert row["test"] == "paired bootstrap over clusters" and np.isnan(row["McNemar p"])  # McNemar assumes independence
    assert row["95% CI of Δ"][0] == 0.0 and row["verdict"] == "not significant"


def test_verdict_follows_the_interval_where_mcnemar_disagrees(tmp_path: Path) -> None:
    # 5 examples only a gets right, 14 only b, of 100: McNemar's p is 0.064, the paired interval
    # [+1, +18] excludes 0: the pair is "b better", never "not significant" next to that interval
    xa, xb = np.zeros(100, bool), np.zeros(100, bool)
    xa[:5], xb[5:19], xa[50:70], xb[50:70] = True, True, True, True
    frame, metas, _ = load_frame(
        write_run(
            tmp_path / "run",
            [make_record("a(bits=6)", values={"agreement": xa}), make_record("b(bits=6)", values={"agreement": xb})],
            metrics=("agreement",),
        )
    )
    (row,) = equal_bits(frame, _agreement(metas)).to_dict("records")
    assert row["95% CI of Δ"] == (1.0, 18.0) and row["verdict"] == "b(bits=6) better"
    assert row["McNemar p"] == pytest.approx(0.0636, abs=1e-4)  # shown, as a secondary figure


def _seed_records(method: str, rate: float, gains: tuple[int, ...], n: int = 2000) -> list[dict[str, Any]]:
    """One record per seed: the outcomes of seed s with ``gains[s]`` right answers added (removed if < 0)."""
    recs = []
    for s, k in enumerate(gains):
        x = outcomes(rate, n, s)
        x[np.flatnonzero(~x if k > 0 else x)[: abs(k)]] = k > 0
        recs.append(make_record(method, seed=s, values={"top1": x}))
    return recs


def test_three_seeds_whose_differences_disagree_in_sign_are_not_significant(tmp_path: Path) -> None:
    base = _seed_records("a(bits=4)", 0.7, (0, 0, 0))
    # against a's seed s, b's seed s is +10, +10 and -7.5 points: pooled over examples +4.2 points
    new = [
        make_record("b(bits=4)", seed=s, values={"top1": np.array(samples.decode(r["per_example"]["top1"]))})
        for s, r in enumerate(_seed_records("b", 0.7, (200, 200, -150)))
    ]
    frame, metas, _ = load_frame(write_run(tmp_path / "run", base + new))
    top1 = next(m for m in metas if m.name == "top1")
    table = methods(frame, metas).set_index("method")
    xa, xb = table.loc["a(bits=4)", "samples:top1"], table.loc["b(bits=4)", "samples:top1"]
    assert stats.paired_bootstrap(xa, xb, 100).lo > 0  # per-example means over seeds: "significant"
    (row,) = equal_bits(frame, top1).to_dict("records")
    assert row["Δ top1 (B − A)"] == pytest.approx(100 * 250 / 6000)
    lo, hi = row["95% CI of Δ"]
    assert lo < 0 < hi and row["verdict"] == "not significant"
    assert row["test"] == "paired bootstrap and seeds" and np.isnan(row["McNemar p"])


def test_too_few_seeds_or_failed_cells_are_inconclusive(tmp_path: Path) -> None:
    base = _seed_records("a(bits=4)", 0.7, (0, 0))
    new = [
        make_record("b(bits=4)", seed=s, values={"top1": np.array(samples.decode(r["per_example"]["top1"]))})
        for s, r in enumerate(_seed_records("b", 0.7, (300, 300)))
    ]
    frame, metas, _ = load_frame(write_run(tmp_path / "two", base + new))
    (row,) = equal_bits(frame, next(m for m in metas if m.name == "top1")).to_dict("records")
    assert row["95% CI of Δ"][0] > 0 and row["verdict"] == "inconclusive"  # 2 seeds of a stochastic method
    one = [
        make_record("a(bits=4)", values={"top1": outcomes(0.7, 2000, 0)}),
        make_record("b(bits=4)", values={"top1": outcomes(0.9, 2000, 0)}),
        make_record("b(bits=4)", seed=1, status="error"),
    ]
    frame, metas, _ = load_frame(write_run(tmp_path / "failed", one))
    (row,) = equal_bits(frame, next(m for m in metas if m.name == "top1")).to_dict("records")
    assert row["95% CI of Δ"][0] > 0 and row["verdict"] == "inconclusive"  # one of b's fits failed


def test_compare_resamples_clusters(tmp_path: Path) -> None:
    right = [True] * 6 + [False] * 2
    worse = _views([False, False] + right[2:])  # 2 photos lost: 18 views
    base = write_run(
        tmp_path / "base", [_clustered(make_record("q", values={"agreement": _views(right)}))], metrics=("agreement",)
    )
    new = write_run(
        tmp_path / "new", [_clustered(make_record("q", suite="n", values={"agreement": worse}))], metrics=("agreement",)
    )
    (change,) = [c for c in compare_runs(base, new).changes if c.metric == "agreement"]
    assert change.test == "paired" and change.diff == pytest.approx(-25.0)
    assert change.hi == 0.0 and not change.significant  # 2 of 8 photos: P(neither drawn) = 10 % > 2.5 %


CLUSTER_PLUGIN = """
import dataclasses
import numpy as np
import torch
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    n: int = 48

def build(config, model):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(config.n, *model.input_shape, generator=gen)
    y = torch.randint(0, model.num_classes, (config.n,), generator=gen)

    def batches(batch_size):
        for i in range(0, config.n, batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]

    return b2s.sources.LoadedData(batches, config.n, True, f"grouped:{config.n}", clusters=np.arange(config.n) // 6)

@b2s.hookimpl
def b2s_register_datasets(register):
    register(b2s.DatasetSpec("grouped", Cfg, build, True, ""))
"""


def test_a_run_stores_the_clusters_its_dataset_declares(
    tmp_path: Path, write_suite: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = tmp_path / "groupedplugin.py"
    plugin.write_text(CLUSTER_PLUGIN)
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(plugin))
    suite = write_suite("""
        suite: grouped
        models:
          - name: tiny:cnn
        dataset: {name: grouped}
        compressors:
          - name: quantize
            grid: {bits: [4]}
        metrics: [agreement, bits]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out)) == 0
    recs = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs)
    for rec in recs:
        ids = samples.clusters_of(rec)
        assert ids is not None and ids.tolist() == (np.arange(48) // 6).tolist()
    frame, _, _ = load_frame(out)
    q = next(r for r in recs if r["label"] == "quantize(bits=4)")
    x = samples.decode(q["per_example"]["agreement"])
    row = frame.set_index("method").loc["quantize(bits=4)"]
    assert (row["ci_lo:agreement"], row["ci_hi:agreement"]) == stats.bootstrap_ci(x, 100, clusters=np.arange(48) // 6)[1:]


def test_claims_paired_interval_resamples_clusters() -> None:
    from b2s_bench_plugins.compressors.big2small.claims import _pooled

    base = _clustered(make_record("quantize(bits=6)", values={"agreement": _views([False] * 2 + [True] * 6)}))
    new = _clustered(make_record("big2small(bits=6)", values={"agreement": _views([True] * 8)}))
    result = _pooled(base, [new], "agreement")
    assert result is not None
    diff, lo, _ = result
    assert diff == pytest.approx(25.0) and lo == 0.0  # by photo: 2 of 8 photos differ, so 0 is reachable


def test_loaded_data_checks_its_cluster_ids() -> None:
    from b2s_bench.sources import LoadedData

    def no_batches(batch_size: int) -> list[Any]:
        return []

    assert LoadedData(no_batches, 4, True, "d", clusters=np.array([0, 0, 1, 1])).clusters is not None
    with pytest.raises(ValueError, match="one integer cluster id per example"):
        LoadedData(no_batches, 4, True, "d", clusters=np.array([0, 1]))
    with pytest.raises(ValueError, match="one integer cluster id per example"):
        LoadedData(no_batches, 2, True, "d", clusters=np.array([0.0, 1.0]))
