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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["RESAMPLES", "SEED", "LEVEL", "ALPHA", "Interval", "Paired", "McNemar", "bootstrap_means",
           "bootstrap_ci", "paired_bootstrap", "independent_bootstrap", "mcnemar_exact", "mean_std", "excludes"]

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
ALPHA = 0.05
#: at most this many distinct values: resample by multinomial counts of the values (exact, fast)
_FEW_LEVELS = 256
#: values gathered per chunk when resampling examples one by one (bounds the memory to ~16 MB)
_CHUNK = 2_000_000


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


def _flat(x: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("a bootstrap needs at least one example")
    return arr


def bootstrap_means(x: Sequence[float] | np.ndarray, resamples: int = RESAMPLES,
                    rng: np.random.Generator | None = None) -> np.ndarray:
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
        out[start:start + m] = arr[rng.integers(0, n, size=(m, n))].mean(axis=1)
    return out


def _quantiles(means: np.ndarray, level: float) -> tuple[float, float]:
    if np.isnan(means).any():
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def bootstrap_ci(x: Sequence[float] | np.ndarray, scale: float = 1.0, resamples: int = RESAMPLES,
                 seed: int = SEED, level: float = LEVEL) -> Interval:
    """The mean of ``x`` times ``scale`` and its percentile bootstrap interval."""
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


def paired_bootstrap(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, scale: float = 1.0,
                     resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> Paired:
    """Mean of ``b − a`` over the same examples, its interval, and a two-sided bootstrap p-value.

    The p-value is twice the smaller share of resampled differences at or beyond zero on either
    side, with one added to the count (1 when every resample is exactly zero, as for two identical
    methods).

    Raises:
        ValueError: ``a`` and ``b`` of different lengths (they are not the same examples).
    """
    xa, xb = _flat(a), _flat(b)
    if xa.size != xb.size:
        raise ValueError(f"paired samples must have the same examples, got {xa.size} and {xb.size}")
    d = xb - xa
    means = bootstrap_means(d, resamples, np.random.default_rng(seed))
    lo, hi = _quantiles(means, level)
    return Paired(float(d.mean()) * scale, lo * scale, hi * scale, _bootstrap_p(means))


def independent_bootstrap(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, scale: float = 1.0,
                          resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> Paired:
    """Mean of ``b`` minus mean of ``a`` over different examples, each resampled on its own."""
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
