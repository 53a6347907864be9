"""Lloyd's k-means on the values of one tensor (scalar weights, so one dimension).

In one dimension every cluster is a run of the sorted weights, cut at the midpoints between
neighbouring centroids: the weights are sorted once with prefix sums of x and x², and then each
Lloyd iteration (the same iterations as the textbook algorithm) costs one binary search per
centroid, O(k log N), not O(N·k). Computed in float64; an empty cluster keeps its centroid where it was (the paper says nothing of
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
    xs = torch.sort(x).values
    zero = torch.zeros(1, dtype=torch.float64)
    sums = torch.cat([zero, torch.cumsum(xs, 0)])  # prefix sums: a cluster is a run of the sorted values
    squares = torch.cat([zero, torch.cumsum(xs * xs, 0)])
    ends = _ends(xs, centroids)
    error = _sse(centroids, ends, sums, squares)
    for step in range(1, iterations + 1):
        starts = torch.cat([torch.zeros(1, dtype=torch.int64), ends[:-1]])
        counts = (ends - starts).to(torch.float64)
        total = sums[ends] - sums[starts]
        moved = torch.where(counts > 0, total / counts.clamp(min=1), centroids)
        # means of clusters of a sorted partition stay sorted, but a kept empty centroid may not be
        centroids = torch.sort(moved).values
        new_ends = _ends(xs, centroids)
        unchanged = torch.equal(new_ends, ends)
        ends = new_ends
        new_error = _sse(centroids, ends, sums, squares)
        improved = error - new_error
        error = new_error
        if unchanged or improved <= tolerance * max(error + improved, 1e-300):
            return KMeansResult(centroids, assign(x, centroids), step, True)
    return KMeansResult(centroids, assign(x, centroids), iterations, False)


def _ends(xs: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Where each cluster's run of the sorted values ``xs`` ends (exclusive), as :func:`assign` splits them."""
    midpoints = (centroids[1:] + centroids[:-1]) / 2
    inner = torch.searchsorted(xs, midpoints, right=True)  # values <= a midpoint go to the lower centroid
    return torch.cat([inner, torch.tensor([xs.numel()], dtype=torch.int64)])


def _sse(centroids: torch.Tensor, ends: torch.Tensor, sums: torch.Tensor, squares: torch.Tensor) -> float:
    """The summed squared error of the partition ``ends`` around ``centroids``, from the prefix sums."""
    starts = torch.cat([torch.zeros(1, dtype=torch.int64), ends[:-1]])
    n = (ends - starts).to(torch.float64)
    s1, s2 = sums[ends] - sums[starts], squares[ends] - squares[starts]
    return float((s2 - 2 * centroids * s1 + centroids * centroids * n).sum())
