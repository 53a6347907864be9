"""Lloyd's k-means on the values of one tensor (scalar weights, so one dimension).

In one dimension the nearest centroid is found by sorting the centroids and bucketing each weight
between the midpoints of neighbours, O(N log k) per iteration without an N × k distance matrix.
Computed in float64; an empty cluster keeps its centroid where it was (the paper says nothing of
empty clusters; with linear initialisation in the tails they are common and harmless: an unused
codebook entry still costs its bits, which are counted).
"""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["KMeansResult", "initial_centroids", "assign", "kmeans_1d"]


@dataclasses.dataclass
class KMeansResult:
    """The shared values and each weight's index into them."""

    centroids: torch.Tensor  # (k,) float64, in ascending order
    assignment: torch.Tensor  # (N,) int64 in [0, k)
    iterations: int  # Lloyd iterations run
    converged: bool  # stopped by the tolerance (or unchanged assignments), not by the budget


def initial_centroids(x: torch.Tensor, k: int, init: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """k starting centroids for the 1-D values ``x`` (float64), in ascending order.

    - "linear": evenly spaced over [min, max] (Han et al. 2016, Section 3.2: the best of the three).
    - "density": the quantiles at (i + 0.5)/k of x: the CDF's y-axis spaced evenly (our choice of
      the y positions: the paper's figure does not fix the end points; these give each centroid an
      equal share of the weights).
    - "random": k distinct weights drawn at random (Forgy); with fewer distinct weights than k, the
      rest are spread linearly.
    """
    lo, hi = float(x.min()), float(x.max())
    if init == "linear":
        return torch.linspace(lo, hi, k, dtype=torch.float64)
    if init == "density":
        return torch.quantile(x, (torch.arange(k, dtype=torch.float64) + 0.5) / k)
    if init == "random":
        distinct = torch.unique(x)
        if distinct.numel() <= k:
            extra = torch.linspace(lo, hi, k - distinct.numel() + 2, dtype=torch.float64)[1:-1]
            return torch.sort(torch.cat([distinct, extra])).values
        pick = torch.randperm(distinct.numel(), generator=generator)[:k]
        return torch.sort(distinct[pick]).values
    raise ValueError(f"init must be one of linear, density, random, got {init!r}")


def assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The index of the nearest centroid (ascending ``centroids``) for every value of ``x``; ties go
    to the lower centroid."""
    midpoints = (centroids[1:] + centroids[:-1]) / 2
    return torch.bucketize(x, midpoints, right=False)


def kmeans_1d(
    x: torch.Tensor,
    k: int,
    init: str = "linear",
    iterations: int = 100,
    tolerance: float = 1e-6,
    generator: torch.Generator | None = None,
) -> KMeansResult:
    """Lloyd's algorithm on the values ``x`` with k clusters.

    Each iteration moves each centroid to the mean of its values and assigns every value to its
    nearest centroid. It stops after ``iterations``, or once the mean squared error fell by less than
    ``tolerance`` (relative) in an iteration or no assignment changed (``converged``). Both steps
    never increase the error, so the stop is well defined.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x = x.detach().reshape(-1).to(torch.float64)
    if x.numel() == 0:
        return KMeansResult(torch.zeros(k, dtype=torch.float64), torch.zeros(0, dtype=torch.int64), 0, True)
    centroids = initial_centroids(x, k, init, generator)
    labels = assign(x, centroids)
    error = _mse(x, centroids, labels)
    for step in range(1, iterations + 1):
        counts = torch.bincount(labels, minlength=k).to(torch.float64)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, labels, x)
        moved = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        # means of clusters of a sorted partition stay sorted, but a kept empty centroid may not be
        centroids = torch.sort(moved).values
        new_labels = assign(x, centroids)
        unchanged = torch.equal(new_labels, labels)
        labels = new_labels
        new_error = _mse(x, centroids, labels)
        improved = error - new_error
        error = new_error
        if unchanged or improved <= tolerance * max(error + improved, 1e-300):
            return KMeansResult(centroids, labels, step, True)
    return KMeansResult(centroids, labels, iterations, False)


def _mse(x: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor) -> float:
    return float((centroids[labels] - x).pow(2).mean())
