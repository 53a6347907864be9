"""Statistics for verdicts with error bars: bootstrap intervals, paired tests, spread across seeds.

Everything is deterministic: each interval draws from its own ``numpy.random.default_rng(seed)``
(seed :data:`SEED`, :data:`RESAMPLES` resamples unless asked otherwise), so a report rebuilt from the
same records prints the same numbers whatever order it computes them in.

- :func:`bootstrap_ci`: percentile bootstrap interval of a mean over examples. When the values take
  few distinct levels (right/wrong outcomes, or their means over a few seeds) a resample is drawn
  as multinomial counts of those levels: the same distribution as resampling examples, at a cost
  that does not grow with the number of examples.
- :func:`paired_bootstrap`: the same for the per-example difference of two methods on the same
  examples, with a two-sided bootstrap p-value.
- :func:`independent_bootstrap`: the difference of two means over different examples.
- :func:`mcnemar_exact`: McNemar's exact test for paired right/wrong outcomes (a two-sided binomial
  test on the discordant pairs).
- :func:`mean_std`: mean and sample standard deviation across seeds.
- :func:`aggregated`: a metric's value from a mean of its per-example outcomes ("mean": the mean
  itself; "exp_mean": its exp, a perplexity from per-window NLL). Every interval and difference
  above takes ``aggregate=``: with "exp_mean" each *resampled mean* is transformed before the
  quantiles are read, and a paired difference is exp(mean b) − exp(mean a) per resample (the same
  clusters drawn for both), never exp of a difference of means.

Clusters and seeds (:func:`pooled_ci`, :func:`pooled_paired`, :func:`pooled_independent`; the
``clusters=`` argument of the functions above): examples that are not independent (the 9 views of
one photo, the pixels of one image, the tokens of one document) share a *cluster id*, and an
interval resamples whole clusters, not examples: resampling views of 8 photos as if they were 72
independent examples gives intervals about 2x too narrow. ``clusters=None`` means every example is
its own cluster (ImageNet, Fashion-MNIST). A method run with several fit seeds is a 2-D array
(seeds x examples); its interval is a **two-level bootstrap**: each resample draws the seeds with
replacement and, independently, the clusters with replacement, and takes the mean over the drawn
seeds and the examples of the drawn clusters. A paired difference of two methods draws the *same*
clusters for both (they were scored on the same examples) and each method's seeds on their own
(seed s of one compressor has nothing in common with seed s of another). So the spread between fits
widens the interval however many examples each seed has: of 3 seeds, one whose difference has the
other sign keeps 0 inside it (a resample draws it three times with probability 1/27 > 2.5 %).

The verdict rule (:func:`verdict`), the only one reports use: **the 95 % interval decides**. A
difference is significant only when its interval excludes the margin (0 unless a caller states
one); "not significant" exactly when it covers it. McNemar's exact test is a secondary figure only
(it assumes independent pairs, so it is not shown where clusters or several seeds exist), and a
bootstrap p-value is informational: neither ever overrules the interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..tasks import AGGREGATES

__all__ = [
    "RESAMPLES",
    "SEED",
    "LEVEL",
    "ALPHA",
    "Interval",
    "Paired",
    "McNemar",
    "bootstrap_means",
    "bootstrap_ci",
    "paired_bootstrap",
    "independent_bootstrap",
    "mcnemar_exact",
    "mean_std",
    "AGGREGATES",
    "aggregated",
    "excludes",
    "pooled_means",
    "pooled_ci",
    "pooled_paired",
    "pooled_independent",
    "verdict",
    "enough_seeds",
    "SUPPORTED",
    "REFUTED",
    "NOT_SIGNIFICANT",
    "INCONCLUSIVE",
    "NOT_TESTABLE",
    "VERDICTS",
    "MIN_SEEDS",
]

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
ALPHA = 0.05
#: at most this many distinct values: resample by multinomial counts of the values (exact, fast)
_FEW_LEVELS = 256
#: values gathered per chunk when resampling examples one by one (bounds the memory to ~16 MB)
_CHUNK = 2_000_000
#: the verdict words (:func:`verdict`)
SUPPORTED, REFUTED, NOT_SIGNIFICANT, INCONCLUSIVE, NOT_TESTABLE = (
    "supported",
    "refuted",
    "not significant",
    "inconclusive",
    "not testable here",
)
VERDICTS = (SUPPORTED, REFUTED, NOT_SIGNIFICANT, INCONCLUSIVE, NOT_TESTABLE)
#: fewest fit seeds of a stochastic method for a verdict (:func:`enough_seeds`): one seed says
#: nothing about how much another fit would differ, and a bootstrap over two seeds has three
#: distinct seed draws, too few to put an interval on the spread between fits
MIN_SEEDS = 3


class Interval(NamedTuple):
    """An estimate and its confidence interval, in the units the caller asked for (``scale``)."""

    estimate: float
    lo: float
    hi: float


class Paired(NamedTuple):
    """The mean difference ``b − a`` with its interval and a two-sided p-value."""

    diff: float
    lo: float
    hi: float
    p: float


class McNemar(NamedTuple):
    """Discordant pairs (only ``a`` right, only ``b`` right) and the exact two-sided p-value."""

    a_only: int
    b_only: int
    p: float


def aggregated(means: float | np.ndarray, aggregate: str = "mean", scale: float = 1.0) -> Any:
    """A metric's value from the mean of its per-example outcomes, elementwise over an array of
    resampled means: ``scale · m`` for "mean", ``scale · exp(m)`` for "exp_mean" (perplexity from
    the mean NLL per window). A float in, a float out.

    Raises:
        ValueError: an aggregate other than :data:`AGGREGATES`.
    """
    if aggregate == "mean":
        out = np.asarray(means, dtype=np.float64) * scale
    elif aggregate == "exp_mean":
        with np.errstate(over="ignore"):  # a huge mean NLL is an infinite perplexity, not an error
            out = np.exp(np.asarray(means, dtype=np.float64)) * scale
    else:
        raise ValueError(f"aggregate {aggregate!r} is not one of {AGGREGATES}")
    return float(out) if out.ndim == 0 else out


def _flat(x: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("a bootstrap needs at least one example")
    return arr


def bootstrap_means(
    x: Sequence[float] | np.ndarray, resamples: int = RESAMPLES, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples (with replacement, same size) of ``x``."""
    arr = _flat(x)
    rng = rng if rng is not None else np.random.default_rng(SEED)
    if not np.isfinite(arr).all():
        return np.full(resamples, math.nan)
    n = arr.size
    levels, counts = np.unique(arr, return_counts=True)
    if levels.size <= _FEW_LEVELS:
        draws = rng.multinomial(n, counts / n, size=resamples)
        return draws @ levels / n
    out = np.empty(resamples)
    step = max(1, _CHUNK // n)
    for start in range(0, resamples, step):
        m = min(step, resamples - start)
        out[start : start + m] = arr[rng.integers(0, n, size=(m, n))].mean(axis=1)
    return out


def _quantiles(means: np.ndarray, level: float) -> tuple[float, float]:
    if np.isnan(means).any():
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def bootstrap_ci(
    x: Sequence[float] | np.ndarray,
    scale: float = 1.0,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    clusters: Sequence[int] | np.ndarray | None = None,
    aggregate: str = "mean",
) -> Interval:
    """The mean of ``x`` times ``scale`` (or its :func:`aggregated` value) and its percentile
    bootstrap interval (resampling the clusters of ``clusters``, one id per example, when given:
    :func:`pooled_ci`)."""
    if clusters is not None or aggregate != "mean":
        return pooled_ci(_flat(x), clusters, scale, resamples, seed, level, aggregate)
    arr = _flat(x)
    lo, hi = _quantiles(bootstrap_means(arr, resamples, np.random.default_rng(seed)), level)
    return Interval(float(arr.mean()) * scale, lo * scale, hi * scale)


def _bootstrap_p(means: np.ndarray) -> float:
    """Two-sided: twice the smaller count of resampled differences at or beyond zero on one side,
    plus one (a bootstrap cannot show a p-value below 1 / (resamples + 1))."""
    if np.isnan(means).any():
        return math.nan
    tail = min(int((means <= 0).sum()), int((means >= 0).sum()))
    return min(1.0, 2.0 * (tail + 1) / (means.size + 1))


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    scale: float = 1.0,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    clusters: Sequence[int] | np.ndarray | None = None,
) -> Paired:
    """Mean of ``b − a`` over the same examples, its interval, and a two-sided bootstrap p-value
    (resampling the clusters of ``clusters``, one id per example, when given: :func:`pooled_paired`).

    The p-value is twice the smaller share of resampled differences at or beyond zero on either
    side, with one added to the count (1 when every resample is exactly zero, as for two identical
    methods).

    Raises:
        ValueError: ``a`` and ``b`` of different lengths (they are not the same examples).
    """
    xa, xb = _flat(a), _flat(b)
    if xa.size != xb.size:
        raise ValueError(f"paired samples must have the same examples, got {xa.size} and {xb.size}")
    if clusters is not None:
        return pooled_paired(xa, xb, clusters, scale, resamples, seed, level)
    d = xb - xa
    means = bootstrap_means(d, resamples, np.random.default_rng(seed))
    lo, hi = _quantiles(means, level)
    return Paired(float(d.mean()) * scale, lo * scale, hi * scale, _bootstrap_p(means))


def independent_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    scale: float = 1.0,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    clusters_a: Sequence[int] | np.ndarray | None = None,
    clusters_b: Sequence[int] | np.ndarray | None = None,
) -> Paired:
    """Mean of ``b`` minus mean of ``a`` over different examples, each resampled on its own (by
    clusters where ``clusters_a`` / ``clusters_b`` give them: :func:`pooled_independent`)."""
    if clusters_a is not None or clusters_b is not None:
        return pooled_independent(_flat(a), _flat(b), clusters_a, clusters_b, scale, resamples, seed, level)
    xa, xb = _flat(a), _flat(b)
    rng_a, rng_b = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    means = bootstrap_means(xb, resamples, rng_b) - bootstrap_means(xa, resamples, rng_a)
    lo, hi = _quantiles(means, level)
    return Paired(float(xb.mean() - xa.mean()) * scale, lo * scale, hi * scale, _bootstrap_p(means))


def mcnemar_exact(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray) -> McNemar:
    """McNemar's exact test: under "equally good", each discordant pair is a fair coin.

    p = min(1, 2 · P(X ≤ min(a_only, b_only))) with X ~ Binomial(a_only + b_only, 1/2), computed
    in exact integers (no normal approximation, so small counts are right too).

    Raises:
        ValueError: ``a`` and ``b`` of different lengths.
    """
    xa, xb = np.asarray(a, dtype=bool).reshape(-1), np.asarray(b, dtype=bool).reshape(-1)
    if xa.size != xb.size:
        raise ValueError(f"paired outcomes must have the same examples, got {xa.size} and {xb.size}")
    a_only, b_only = int((xa & ~xb).sum()), int((~xa & xb).sum())
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return McNemar(0, 0, 1.0)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return McNemar(a_only, b_only, min(1.0, 2 * tail / 2**n))


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1) of the values that are not NaN.

    The std is NaN for fewer than two values, and 0 for equal ones (also infinite ones, such as the
    PSNR of exact copies).
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return math.nan, math.nan
    if arr.size == 1:
        return float(arr[0]), math.nan
    if (arr == arr[0]).all():
        return float(arr[0]), 0.0
    return float(arr.mean()), float(arr.std(ddof=1))


def excludes(lo: float, hi: float, value: float = 0.0) -> bool:
    """Whether the interval [lo, hi] lies entirely on one side of ``value`` (a significant change)."""
    return (lo > value or hi < value) if not (math.isnan(lo) or math.isnan(hi)) else False


# --- clusters and seeds ---

Runs = Sequence[float] | Sequence[Sequence[float]] | np.ndarray
Clusters = Sequence[int] | np.ndarray | None


def _runs(x: Runs, what: str = "runs") -> np.ndarray:
    """A method's outcomes as a 2-D float64 array, seeds x examples (one run: a 1-D array)."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except ValueError as e:  # ragged: seeds with different numbers of examples
        raise ValueError(f"{what}: every seed must have the same examples ({e})") from None
    arr = arr[None, :] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"{what}: need one value per example for each seed (seeds x examples), got an array of shape {np.shape(x)}"
        )
    return arr


def _cluster_index(clusters: Clusters, n: int) -> np.ndarray:
    """Each example's cluster as 0..C-1 (every example its own cluster when ``clusters`` is None).

    Raises:
        ValueError: not one cluster id per example.
    """
    if clusters is None:
        return np.arange(n)
    ids = np.asarray(clusters).reshape(-1)
    if ids.size != n:
        raise ValueError(
            f"clusters: {ids.size} cluster ids for {n} examples; give one id per example "
            "(or None when the examples are independent)"
        )
    return np.unique(ids, return_inverse=True)[1].reshape(-1)


def _sums(runs: np.ndarray, index: np.ndarray, n_clusters: int) -> np.ndarray:
    """Seeds x clusters: the sum of each seed's values over each cluster's examples."""
    return np.stack([np.bincount(index, weights=row, minlength=n_clusters) for row in runs])


def _two_level(methods: Sequence[np.ndarray], counts: np.ndarray, resamples: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Resampled means of each method (seeds x clusters sums): one draw of clusters per resample,
    shared by all methods (they are scored on the same examples), and per method its own draw of
    seeds. A resample's mean is the sum over the drawn clusters of the seed-averaged sums, divided
    by their number of examples (clusters of different sizes weigh by their size, as examples do)."""
    # one row per cluster: its number of examples, then each method's sum over it for every seed
    units = np.column_stack([counts, *(sums.T for sums in methods)])
    n_clusters = units.shape[0]
    levels, mult = np.unique(units, axis=0, return_counts=True)
    if levels.shape[0] <= _FEW_LEVELS:
        # few distinct clusters (right/wrong outcomes, 8 photos): draw how often each kind is drawn,
        # the same distribution as drawing clusters one by one
        totals = rng.multinomial(n_clusters, mult / n_clusters, size=resamples) @ levels
    else:
        totals = np.empty((resamples, units.shape[1]))
        step = max(1, _CHUNK // n_clusters)
        for start in range(0, resamples, step):
            m = min(step, resamples - start)
            drawn = rng.integers(0, n_clusters, size=(m, n_clusters)) + (np.arange(m) * n_clusters)[:, None]
            times = np.bincount(drawn.reshape(-1), minlength=m * n_clusters).reshape(m, n_clusters)
            totals[start : start + m] = times.astype(np.float64) @ units  # times drawn x each cluster's sums
    outs, col = [], 1
    for sums in methods:
        seeds = sums.shape[0]
        block = totals[:, col : col + seeds]
        col += seeds
        if seeds == 1:
            total = block[:, 0]
        else:
            weights = rng.multinomial(seeds, np.full(seeds, 1.0 / seeds), size=resamples)  # seeds drawn with replacement
            total = (weights * block).sum(axis=1) / seeds
        outs.append(total / totals[:, 0])
    return outs


def pooled_means(
    runs: Runs, clusters: Clusters = None, resamples: int = RESAMPLES, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Means of ``resamples`` two-level bootstrap resamples of one method's outcomes (seeds x
    examples, or one run): seeds and clusters drawn with replacement (see the module docstring).
    One seed without clusters is :func:`bootstrap_means` (every example its own cluster)."""
    arr = _runs(runs)
    rng = rng if rng is not None else np.random.default_rng(SEED)
    if arr.shape[0] == 1 and clusters is None:
        return bootstrap_means(arr[0], resamples, rng)
    if not np.isfinite(arr).all():
        return np.full(resamples, math.nan)
    index = _cluster_index(clusters, arr.shape[1])
    n_clusters = int(index.max()) + 1
    counts = np.bincount(index, minlength=n_clusters).astype(np.float64)
    return _two_level([_sums(arr, index, n_clusters)], counts, resamples, rng)[0]


def pooled_ci(
    runs: Runs,
    clusters: Clusters = None,
    scale: float = 1.0,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    aggregate: str = "mean",
) -> Interval:
    """One method's mean over all its seeds and examples (times ``scale``) with the two-level
    percentile interval of :func:`pooled_means`.

    Args:
        runs: seeds x examples (or one seed's examples), the same examples in every seed.
        clusters: one cluster id per example (the photo a view came from), or None when the
            examples are independent.
        aggregate: "exp_mean" gives exp of the mean and the quantiles of the exp of each resampled
            mean (:func:`aggregated`).

    Raises:
        ValueError: no examples, seeds of different lengths, or not one cluster id per example.
    """
    arr = _runs(runs)
    means = pooled_means(arr, clusters, resamples, np.random.default_rng(seed))
    if aggregate != "mean":
        lo, hi = _quantiles(aggregated(means, aggregate, scale), level)
        return Interval(aggregated(float(arr.mean()), aggregate, scale), lo, hi)
    lo, hi = _quantiles(means, level)
    return Interval(float(arr.mean()) * scale, lo * scale, hi * scale)


def pooled_paired(
    a: Runs,
    b: Runs,
    clusters: Clusters = None,
    scale: float = 1.0,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    aggregate: str = "mean",
) -> Paired:
    """The difference ``b − a`` of two methods scored on the same examples, pooled over each one's
    seeds: the mean over b's seeds and examples minus a's, its two-level interval (the same
    clusters drawn for both, each method's seeds drawn on their own) and a two-sided bootstrap
    p-value (informational: :func:`verdict` goes by the interval).

    With one seed each and no clusters it is :func:`paired_bootstrap` (the same numbers). With
    ``aggregate="exp_mean"`` the difference is exp(mean b) − exp(mean a), and each resample's
    difference is that of the exp of its two resampled means (:func:`aggregated`).

    Raises:
        ValueError: the methods' runs have different examples, or not one cluster id per example.
    """
    xa, xb = _runs(a, "a"), _runs(b, "b")
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"paired samples must have the same examples, got {xa.shape[1]} and {xb.shape[1]}")
    if xa.shape[0] == 1 and xb.shape[0] == 1 and clusters is None and aggregate == "mean":
        return paired_bootstrap(xa[0], xb[0], scale, resamples, seed, level)
    if aggregate != "mean":
        estimate = aggregated(float(xb.mean()), aggregate, scale) - aggregated(float(xa.mean()), aggregate, scale)
    else:
        estimate = float(xb.mean() - xa.mean()) * scale
    if not (np.isfinite(xa).all() and np.isfinite(xb).all()):
        return Paired(estimate, math.nan, math.nan, math.nan)
    index = _cluster_index(clusters, xa.shape[1])
    n_clusters = int(index.max()) + 1
    counts = np.bincount(index, minlength=n_clusters).astype(np.float64)
    ma, mb = _two_level(
        [_sums(xa, index, n_clusters), _sums(xb, index, n_clusters)], counts, resamples, np.random.default_rng(seed)
    )
    if aggregate != "mean":
        means = aggregated(mb, aggregate, scale) - aggregated(ma, aggregate, scale)
        lo, hi = _quantiles(means, level)
        return Paired(estimate, lo, hi, _bootstrap_p(means))
    means = mb - ma
    lo, hi = _quantiles(means, level)
    return Paired(estimate, lo * scale, hi * scale, _bootstrap_p(means))


def pooled_independent(
    a: Runs,
    b: Runs,
    clusters_a: Clusters = None,
    clusters_b: Clusters = None,
    scale: float = 1.0,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    aggregate: str = "mean",
) -> Paired:
    """The difference of two methods' pooled means over *different* examples: each one's seeds and
    clusters resampled on their own (:func:`pooled_means`); each resampled mean transformed first
    for an ``aggregate`` other than "mean" (:func:`aggregated`)."""
    xa, xb = _runs(a, "a"), _runs(b, "b")
    rng_a, rng_b = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    mb, ma = pooled_means(xb, clusters_b, resamples, rng_b), pooled_means(xa, clusters_a, resamples, rng_a)
    if aggregate != "mean":
        means = aggregated(mb, aggregate, scale) - aggregated(ma, aggregate, scale)
        lo, hi = _quantiles(means, level)
        diff = aggregated(float(xb.mean()), aggregate, scale) - aggregated(float(xa.mean()), aggregate, scale)
        return Paired(diff, lo, hi, _bootstrap_p(means))
    means = mb - ma
    lo, hi = _quantiles(means, level)
    return Paired(float(xb.mean() - xa.mean()) * scale, lo * scale, hi * scale, _bootstrap_p(means))


def enough_seeds(seeds: int, stochastic: bool = True) -> bool:
    """Whether a method's seeds can carry a verdict: any number for a deterministic method (its
    fits do not vary), at least :data:`MIN_SEEDS` for a stochastic one."""
    return not stochastic or seeds >= MIN_SEEDS


def verdict(result: Paired | Interval | None, higher_is_better: bool = True, margin: float = 0.0, reliable: bool = True) -> str:
    """The verdict on "``b`` is better than ``a`` by more than ``margin``" from the interval of
    ``b − a`` (a :class:`Paired` or an :class:`Interval`, in the metric's units), by one rule:

    - "not testable here": no result (the records do not compare the two);
    - "inconclusive": ``reliable`` is False (too few seeds, failed or unconverged fits: see
      :func:`enough_seeds`) or the interval is NaN (non-finite outcomes);
    - "supported": the whole interval is better than ``margin`` (above it, or below it for a
      lower-is-better metric);
    - "refuted": the whole interval is worse than ``margin``;
    - "not significant": the interval covers ``margin``.

    ``margin`` is how much better ``b`` must be, in the metric's units, whichever its direction
    (a negative margin asks "not worse by more than this").

    So "not significant" is printed exactly when the interval covers the margin, and a p-value
    (McNemar's or the bootstrap's) never overrules the interval.
    """
    if result is None:
        return NOT_TESTABLE
    lo, hi = float(result[1]), float(result[2])
    if not reliable or math.isnan(lo) or math.isnan(hi):
        return INCONCLUSIVE
    if not higher_is_better:  # the interval of the improvement; ``margin`` is an improvement already
        lo, hi = -hi, -lo
    if lo > margin:
        return SUPPORTED
    if hi < margin:
        return REFUTED
    return NOT_SIGNIFICANT
