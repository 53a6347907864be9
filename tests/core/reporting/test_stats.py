"""Statistics (bootstrap intervals, McNemar's exact test, spread across seeds) and the per-example
encoding of records, against values worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from b2s_bench.reporting import stats
from b2s_bench.store import samples


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


@pytest.mark.parametrize(
    ("a_only", "b_only", "p"),
    [
        (0, 0, 1.0),
        (0, 5, 2 / 32),  # all five discordant pairs one way: 2 · (1/2)^5
        (1, 9, 2 * (1 + 10) / 1024),  # 2 · P(X ≤ 1), X ~ Binomial(10, 1/2)
        (5, 5, 1.0),
    ],
)
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
    entries = samples.encode_all(
        {"top1": torch.tensor([True, False, True]), "kl": torch.tensor([0.5, 0.25]), "rank": torch.tensor([3, 1, 2])}
    )
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


# --- clusters, seeds and the verdict rule ---


def _photo_views(photo_right: list[bool], views: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes of ``views`` views of each photo, each view as right as its photo (perfectly
    correlated), in the photo set's order (view v of photo p at v · photos + p), and the clusters."""
    photos = len(photo_right)
    return np.tile(np.array(photo_right), views), np.tile(np.arange(photos), views)


def test_perfectly_correlated_views_give_the_interval_of_the_photos_alone() -> None:
    x, clusters = _photo_views([True] * 4 + [False] * 4)
    clustered = stats.bootstrap_ci(x, 100, clusters=clusters)
    # by hand: resampling 8 photos of which 4 are right gives 100 · Binomial(8, 1/2) / 8; its 2.5 %
    # quantile is 1 photo (P(X <= 0) = 1/256 < 2.5 % < P(X <= 1) = 9/256), its 97.5 % quantile 7
    assert (clustered.estimate, clustered.lo, clustered.hi) == (50.0, 12.5, 87.5)
    assert stats.bootstrap_ci(np.array([True] * 4 + [False] * 4), 100)[1:] == (12.5, 87.5)  # the photos alone
    by_example = stats.bootstrap_ci(x, 100)  # the old interval: 72 views as if independent
    assert by_example.hi - by_example.lo < 0.35 * (clustered.hi - clustered.lo)
    # one cluster per example is the example bootstrap (the same distribution, another draw)
    own = stats.bootstrap_ci(x, 100, clusters=np.arange(72))
    assert own.lo == pytest.approx(by_example.lo, abs=3) and own.hi == pytest.approx(by_example.hi, abs=3)


def test_unequal_clusters_weigh_by_their_examples() -> None:
    # cluster 0 has 3 examples (all right), cluster 1 one (wrong): the mean is 3/4, not 1/2
    ci = stats.pooled_ci([1.0, 1.0, 1.0, 0.0], [0, 0, 0, 1], resamples=4000)
    assert ci.estimate == 0.75
    assert (ci.lo, ci.hi) == (0.0, 1.0)  # one of the two clusters twice: 1/4 of the resamples each
    with pytest.raises(ValueError, match="one id per example"):
        stats.pooled_ci([1.0, 0.0], [0, 0, 1])


def test_paired_interval_resamples_photos_and_mcnemar_would_not() -> None:
    # b is right on every view of photos 0 and 1 where a is wrong; the rest agree
    a, clusters = _photo_views([False, False, True, True, False, False, True, True])
    b, _ = _photo_views([True, True, True, True, False, False, True, True])
    by_example = stats.paired_bootstrap(a, b, 100)
    assert by_example.lo > 0 and stats.mcnemar_exact(a, b).p < 1e-4  # 18 discordant views, all one way
    clustered = stats.paired_bootstrap(a, b, 100, clusters=clusters)
    # by hand: the resampled difference is 100 · Binomial(8, 1/4) / 8, P(X = 0) = (3/4)^8 = 10 % > 2.5 %
    assert clustered.diff == pytest.approx(25.0) and clustered.lo == 0.0 and clustered.hi > 50
    assert stats.verdict(clustered) == stats.NOT_SIGNIFICANT and stats.verdict(by_example) == stats.SUPPORTED


def _three_seeds(diffs: tuple[int, int, int], n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """a and b, 3 seeds x n right/wrong outcomes: b gains (or loses) ``diffs[s]`` right answers in seed s."""
    rng = np.random.default_rng(5)
    a = rng.random((3, n)) < 0.7
    b = a.copy()
    for s, k in enumerate(diffs):
        b[s, np.flatnonzero(~a[s] if k > 0 else a[s])[: abs(k)]] = k > 0
    return a, b


def test_seed_level_differences_that_disagree_in_sign_are_not_significant() -> None:
    a, b = _three_seeds((200, 200, -150))  # +10, +10 and -7.5 points
    pooled_examples = stats.paired_bootstrap(a.mean(axis=0), b.mean(axis=0), 100)  # seeds averaged away
    assert pooled_examples.lo > 0 and stats.verdict(pooled_examples) == stats.SUPPORTED
    over_seeds = stats.pooled_paired(a, b, scale=100)
    assert over_seeds.diff == pytest.approx(pooled_examples.diff) == pytest.approx(100 * 250 / 6000)
    # a resample that draws seed 2 three times (1/27 = 3.7 % > 2.5 %) is about -7.5 points
    assert over_seeds.lo < -5 and over_seeds.hi > 5 and stats.verdict(over_seeds) == stats.NOT_SIGNIFICANT
    agree = stats.pooled_paired(*_three_seeds((200, 150, 180)), scale=100)
    assert agree.lo > 0 and stats.verdict(agree) == stats.SUPPORTED
    # seeds of different methods are not paired: 3 seeds of b against one run of a
    one_a = stats.pooled_paired(a[:1], b, scale=100)
    assert one_a.diff == pytest.approx(100 * (b.mean() - a[0].mean()))
    with pytest.raises(ValueError, match="same examples"):
        stats.pooled_paired(a, b[:, :-1])


def test_one_seed_without_clusters_keeps_the_example_bootstrap() -> None:
    a = np.random.default_rng(6).random(500) < 0.6
    b = a.copy()
    b[np.flatnonzero(~a)[:20]] = True
    assert stats.pooled_paired(a, b, scale=100) == stats.paired_bootstrap(a, b, scale=100)
    assert stats.pooled_ci(a, scale=100) == stats.bootstrap_ci(a, scale=100)


def test_independent_runs_resample_their_own_clusters() -> None:
    x, clusters = _photo_views([True] * 4 + [False] * 4)
    y, _ = _photo_views([True] * 6 + [False] * 2)
    clustered = stats.independent_bootstrap(x, y, 100, clusters_a=clusters, clusters_b=clusters)
    plain = stats.independent_bootstrap(x, y, 100)
    assert clustered.diff == pytest.approx(25.0) and plain.lo > 0 and clustered.lo < 0
    assert clustered.hi - clustered.lo > 2 * (plain.hi - plain.lo)


@pytest.mark.parametrize(
    ("lo", "hi", "higher", "margin", "word"),
    [
        (0.5, 2.0, True, 0.0, stats.SUPPORTED),
        (-2.0, -0.5, True, 0.0, stats.REFUTED),
        (0.0, 2.0, True, 0.0, stats.NOT_SIGNIFICANT),  # an end on 0 covers 0
        (-2.0, 0.0, True, 0.0, stats.NOT_SIGNIFICANT),
        (-2.0, -0.5, False, 0.0, stats.SUPPORTED),  # lower is better: a drop is an improvement
        (0.5, 2.0, False, 0.0, stats.REFUTED),
        (0.5, 2.0, True, 1.0, stats.NOT_SIGNIFICANT),  # better, but not by the margin
        (-0.8, -0.2, True, -1.0, stats.SUPPORTED),  # "not worse by more than 1"
        (math.nan, math.nan, True, 0.0, stats.INCONCLUSIVE),
    ],
)
def test_verdict_rule(lo: float, hi: float, higher: bool, margin: float, word: str) -> None:
    assert stats.verdict(stats.Paired((lo + hi) / 2, lo, hi, 0.5), higher, margin) == word
    assert stats.verdict(stats.Interval((lo + hi) / 2, lo, hi), higher, margin) == word


def test_verdict_words_and_seeds() -> None:
    assert stats.verdict(None) == "not testable here"
    assert stats.verdict(stats.Paired(1.0, 0.5, 2.0, 0.01), reliable=False) == "inconclusive"
    assert stats.VERDICTS == ("supported", "refuted", "not significant", "inconclusive", "not testable here")
    assert stats.enough_seeds(1, stochastic=False) and not stats.enough_seeds(2) and stats.enough_seeds(3)


def test_not_significant_exactly_when_the_interval_covers_zero() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        lo, hi = np.sort(rng.normal(0, 1, 2))
        covers = lo <= 0 <= hi
        assert (stats.verdict(stats.Paired(0.0, float(lo), float(hi), 0.01)) == stats.NOT_SIGNIFICANT) == covers
        assert stats.excludes(float(lo), float(hi)) != covers


def test_cluster_ids_round_trip_in_a_record() -> None:
    ids = np.tile(np.arange(8), 9)
    rec = json.loads(json.dumps({"cell_id": "c", "dataset": {"clusters": samples.encode_clusters(ids)}}))
    got = samples.clusters_of(rec)
    assert got is not None and np.array_equal(got, ids)
    assert samples.clusters_of({"dataset": {"name": "imagenet"}}) is None  # independent examples
    with pytest.raises(ValueError, match="integers"):
        samples.encode_clusters(np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="record c: dataset.clusters .*rerun"):
        samples.clusters_of({"cell_id": "c", "dataset": {"clusters": samples.encode(np.array([0.5]))}})
