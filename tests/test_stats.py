"""Statistics (bootstrap intervals, McNemar's exact test, spread across seeds) and the per-example
encoding of records, against values worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from b2s_bench import samples, stats


def test_bootstrap_interval_is_seeded_and_covers_the_mean() -> None:
    x = np.random.default_rng(0).random(400) < 0.7
    a, b = stats.bootstrap_ci(x, scale=100), stats.bootstrap_ci(x, scale=100)
    assert a == b  # the same on every call
    assert a.estimate == pytest.approx(100 * x.mean())
    assert a.lo < a.estimate < a.hi
    half = 1.96 * math.sqrt(x.mean() * (1 - x.mean()) / x.size) * 100
    assert (a.hi - a.lo) / 2 == pytest.approx(half, rel=0.1)
    assert stats.bootstrap_ci(x, scale=100, seed=1) != a  # the seed is what makes it repeatable


def test_few_levels_and_many_levels_resample_the_same_distribution() -> None:
    # right/wrong outcomes are drawn as multinomial counts; adding 1e-9 noise forces resampling examples
    x = (np.arange(1000) % 4 == 0).astype(float)
    fast = stats.bootstrap_ci(x, resamples=4000)
    slow = stats.bootstrap_ci(x + np.random.default_rng(1).random(1000) * 1e-9, resamples=4000)
    assert fast.lo == pytest.approx(slow.lo, abs=0.006) and fast.hi == pytest.approx(slow.hi, abs=0.006)


def test_non_finite_values_give_no_interval() -> None:
    ci = stats.bootstrap_ci([1.0, math.inf, 2.0])
    assert math.isnan(ci.lo) and math.isnan(ci.hi)
    with pytest.raises(ValueError):
        stats.bootstrap_ci([])


def test_paired_bootstrap() -> None:
    a = np.random.default_rng(2).random(300) < 0.6
    same = stats.paired_bootstrap(a, a.copy())
    assert (same.diff, same.lo, same.hi, same.p) == (0.0, 0.0, 0.0, 1.0)
    b = a.copy()
    b[np.flatnonzero(~a)[:40]] = True  # 40 more right answers on the same examples
    r = stats.paired_bootstrap(a, b, scale=100)
    assert r.diff == pytest.approx(100 * 40 / 300) and 0 < r.lo < r.diff < r.hi and r.p < 0.01
    assert stats.excludes(r.lo, r.hi) and not stats.excludes(-1.0, 1.0) and not stats.excludes(math.nan, 1.0)
    with pytest.raises(ValueError, match="same examples"):
        stats.paired_bootstrap(a, b[:-1])


def test_independent_bootstrap_is_wider_than_paired_on_correlated_outcomes() -> None:
    a = np.random.default_rng(3).random(500) < 0.7
    b = a.copy()
    b[np.flatnonzero(a)[:10]] = False
    paired, indep = stats.paired_bootstrap(a, b), stats.independent_bootstrap(a, b)
    assert paired.diff == pytest.approx(indep.diff) == pytest.approx(-10 / 500)
    assert indep.hi - indep.lo > 3 * (paired.hi - paired.lo)


@pytest.mark.parametrize(("a_only", "b_only", "p"), [
    (0, 0, 1.0),
    (0, 5, 2 / 32),  # all five discordant pairs one way: 2 · (1/2)^5
    (1, 9, 2 * (1 + 10) / 1024),  # 2 · P(X ≤ 1), X ~ Binomial(10, 1/2)
    (5, 5, 1.0),
])
def test_mcnemar_exact_by_hand(a_only: int, b_only: int, p: float) -> None:
    both = 7  # concordant pairs do not matter
    a = np.array([True] * a_only + [False] * b_only + [True] * both + [False] * 3)
    b = np.array([False] * a_only + [True] * b_only + [True] * both + [False] * 3)
    result = stats.mcnemar_exact(a, b)
    assert (result.a_only, result.b_only) == (a_only, b_only)
    assert result.p == pytest.approx(p)


def test_mcnemar_exact_matches_scipy_on_large_counts() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    a = np.zeros(5000, bool)
    b = np.zeros(5000, bool)
    a[:130], b[130:300] = True, True
    assert stats.mcnemar_exact(a, b).p == pytest.approx(scipy_stats.binomtest(130, 300, 0.5).pvalue, rel=1e-9)


def test_mean_std_across_seeds() -> None:
    assert stats.mean_std([80.0, 84.0, 82.0]) == pytest.approx((82.0, 2.0))
    mean, std = stats.mean_std([91.0])
    assert mean == 91.0 and math.isnan(std)
    assert stats.mean_std([math.inf, math.inf]) == (math.inf, 0.0)  # e.g. the PSNR of exact copies
    assert stats.mean_std([1.0, math.nan, 3.0])[0] == 2.0


# --- per-example encoding ---


def test_bool_outcomes_are_bit_packed() -> None:
    x = np.random.default_rng(4).random(10_001) < 0.5
    entry = samples.encode(x)
    assert entry["dtype"] == "bool" and entry["n"] == 10_001 and len(entry["data"]) == 4 * math.ceil(1251 / 3)
    assert np.array_equal(samples.decode(json.loads(json.dumps(entry))), x)


def test_floats_use_float16_when_it_keeps_their_precision_else_float32() -> None:
    kl = np.array([0.25, 1.5, 0.0, 3e-3])
    e16 = samples.encode(kl)
    assert e16["dtype"] == "float16" and np.allclose(samples.decode(e16), kl, rtol=1e-3)
    tiny = np.array([1e-9, 0.5])  # below float16's normal range: kept exact in float32
    e32 = samples.encode(tiny)
    assert e32["dtype"] == "float32" and samples.decode(e32)[0] == pytest.approx(1e-9, rel=1e-6)
    assert samples.encode(np.array([1e6]))["dtype"] == "float32"  # above float16's range


def test_encode_all_takes_tensors_and_integers() -> None:
    entries = samples.encode_all({"top1": torch.tensor([True, False, True]), "kl": torch.tensor([0.5, 0.25]),
                                  "rank": torch.tensor([3, 1, 2])})
    assert list(entries) == ["kl", "rank", "top1"]
    assert samples.decode(entries["top1"]).tolist() == [True, False, True]
    assert samples.decode(entries["kl"]).tolist() == [0.5, 0.25]
    assert samples.decode(entries["rank"]).tolist() == [3, 1, 2]


def test_decode_rejects_broken_entries() -> None:
    good = samples.encode(np.array([True, False]))
    with pytest.raises(ValueError, match="cannot hold"):
        samples.decode({**good, "n": 100})
    with pytest.raises(ValueError, match="unknown dtype"):
        samples.decode({**good, "dtype": "complex64"})
    with pytest.raises(ValueError, match="holds 2 values"):
        samples.decode({**samples.encode(np.array([1.5, 2.5])), "n": 3})
    with pytest.raises(TypeError):
        samples.encode(np.array(["a"]))
