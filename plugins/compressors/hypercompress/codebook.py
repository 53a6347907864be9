"""The geometry of Hyper-Compression (arXiv 2409.00592), vectorized in torch: no per-group Python loops.

Two codebooks, one per variant of ``hypercompress``:

* released: the wound line of the released code (``get_Try`` in ``lib/param_compress_new_uint_i.py``).
  With m = ⌈√n⌉ its n points are p_j = ld + (j·l/m² mod l, j·l/m mod l), j = 0..n-1, in the square of
  side l with lower-left corner ld. Writing j = q·m + r this is a sheared lattice: row r sits at height
  r·l/m and holds the points q·l/m + r·l/m², q = 0..⌊(n-1-r)/m⌋. Codeword 0 is the centroid of the
  pairs, codeword j+1 is p_j. The nearest codeword is found in closed form: round q in each of the few
  rows that can hold the nearest point (the released code uses a KD-tree over the same points).
  Pairs outside the square are pulled in by a ring factor, snapped and pushed back out.
* canonical: the irrational winding x(n) = frac(n·δ·a) on the K-torus, a_k = 1/(π+k), n < N_c. The
  nearest n is exact: a grid over [0,1]^K lists, per cell, every trajectory point that can be nearest
  to some point of the cell (its distance to the cell is at most the least farthest-distance of any
  point), so a query checks only its cell's short list (about 5 points for K = 2) instead of all N_c.
  The lists are built from the points of nearby cells only, so the build is cheap too; the index
  depends on (K, N_c, δ) alone and is shared by all tensors.

All geometry is float64; decoded tensors are cast to float32. Encoding measures errors through the
same decode functions the codes use, so a restored artifact decodes bit for bit the same.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch

__all__ = [
    "lattice_side",
    "lattice_snap",
    "lattice_points",
    "lattice_decode",
    "lattice_table",
    "ring_classes",
    "ring_factors",
    "encode_pairs",
    "winding_direction",
    "trajectory",
    "WindingIndex",
    "winding_index",
    "brute_force_nearest",
]

CHUNK = 1 << 20  # elements per chunk of a broadcast computation


# -- released: the sheared lattice in the square ------------------------------------------------------
def lattice_side(n: int) -> int:
    """m = ⌈√n⌉, the number of rows of the wound line (``tan_alpha`` of the released code)."""
    m = math.isqrt(n)
    return m if m * m == n else m + 1


def lattice_points(k: torch.Tensor, n: int, rect_l: float, center: torch.Tensor) -> torch.Tensor:
    """Codewords ``k`` in 0..n (0 is the centroid) as (len(k), 2) float64 points."""
    m = lattice_side(n)
    j = k.to(torch.int64) - 1
    jj = j.clamp(min=0)
    ld = center - rect_l / 2
    x = ld[0] + (jj.double() * rect_l) / (m * m)
    y = ld[1] + ((jj % m).double() * rect_l) / m
    pts = torch.stack([x, y], dim=1)
    return torch.where((j < 0)[:, None], center.expand_as(pts), pts)


def _row(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance to the nearest point of row r, and its q, in units of the row spacing."""
    t = x - r / m
    q = torch.round(t).clamp(min=0)
    q = q.clamp(max=m - 1) if m * m == n else torch.minimum(q, torch.floor((n - 1 - r) / m))
    return (t - q) ** 2 + (y - r) ** 2, q


def _rows(
    x: torch.Tensor, y: torch.Tensor, rows: list[torch.Tensor], n: int, m: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best (squared distance, q, r) over the given rows (a loop over rows, not over points)."""
    d, q = _row(x, y, rows[0], n, m)
    r = rows[0]
    for row in rows[1:]:
        d2, q2 = _row(x, y, row, n, m)
        better = d2 < d
        d, q, r = torch.where(better, d2, d), torch.where(better, q2, q), torch.where(better, row, r)
    return d, q, r


def lattice_snap(points: torch.Tensor, n: int, rect_l: float, center: torch.Tensor) -> torch.Tensor:
    """Index (0..n) of the nearest codeword of each point of (M, 2) ``points``, in closed form.

    In units of the row spacing s = l/m, row r holds the points (q + r/m, r), so the nearest point of
    a row is the rounded (and clamped) q. The two rows around a point are searched first; a result
    nearer than 1 (one row spacing) is certainly the nearest, since every other row is at least that
    far. The few points left (near the edges, where q is clamped) search every row within the
    distance found.
    """
    m = lattice_side(n)
    s = rect_l / m
    ld = center.double() - rect_l / 2
    x = (points[:, 0].double() - ld[0]) / s
    y = (points[:, 1].double() - ld[1]) / s
    r0 = torch.floor(y).clamp(-1, m)
    d, q, r = _rows(x, y, [r0.clamp(0, m - 1), (r0 + 1).clamp(0, m - 1)], n, m)
    centroid = (x - m / 2) ** 2 + (y - m / 2) ** 2
    open_ = torch.minimum(d, centroid) >= 1
    if bool(open_.any()):
        xs, ys = x[open_], y[open_]
        reach = min(m, math.ceil(math.sqrt(float(torch.minimum(d, centroid)[open_].max()))) + 1)
        base = torch.floor(ys).clamp(-reach - 1, m + reach)
        rows = [(base + dr).clamp(0, m - 1) for dr in range(-reach, reach + 2)]
        d[open_], q[open_], r[open_] = _rows(xs, ys, rows, n, m)
    k = (q * m + r).to(torch.int64) + 1
    return torch.where(centroid < d, torch.zeros_like(k), k)


def ring_factors(cls: torch.Tensor, classes: int, rect_l: float, far_dis: float) -> torch.Tensor:
    """The pull-in factor (l/2) / (l/2 + c·each) of ring class c (1 for class 0)."""
    half = rect_l / 2
    each = max(far_dis - half, 1e-12 * half) / max(classes, 1)
    return half / (half + cls.double() * each)


def ring_classes(dist: torch.Tensor, classes: int, rect_l: float, far_dis: float) -> torch.Tensor:
    """Ring class 1..classes of outer points: the first ring whose outer radius holds the point.

    The released code tests ``dist <= l/2 + i·each`` for i = 1..classes-1, and the last ring takes
    everything up to the farthest point.
    """
    half = rect_l / 2
    each = max(far_dis - half, 1e-12 * half) / classes
    cls = torch.ones(dist.shape, dtype=torch.int64)
    for i in range(1, classes):  # classes is small (class_max); this loops over rings, not groups
        cls += (dist > half + i * each).to(torch.int64)
    return cls


def far_distance(center: torch.Tensor, farthest: torch.Tensor) -> float:
    return math.hypot(float(farthest[0]) - float(center[0]), float(farthest[1]) - float(center[1]))


def lattice_table(
    n: int, rect_l: float, classes: int, center: torch.Tensor, farthest: torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Decoded pairs (float64) of indices ``class·(n+1) + codeword``: all of them, or those in ``rows``."""
    c = center.double()
    idx = torch.arange((n + 1) * (classes + 1)) if rows is None else rows
    pts = lattice_points(torch.remainder(idx, n + 1), n, rect_l, c)
    if not classes:
        return pts
    f = ring_factors(torch.div(idx, n + 1, rounding_mode="floor"), classes, rect_l, far_distance(c, farthest.double()))
    return c + (pts - c) / f[:, None]


def lattice_decode(
    idx: torch.Tensor, n: int, rect_l: float, classes: int, center: torch.Tensor, farthest: torch.Tensor
) -> torch.Tensor:
    """Pairs (M, 2) float64 from stored indices: a lookup in the table of all decodable pairs
    (elementwise the same arithmetic as decoding each index, so both give the same bits)."""
    if (n + 1) * (classes + 1) > idx.numel():  # a table larger than the request: decode directly
        return lattice_table(n, rect_l, classes, center, farthest, idx)
    return lattice_table(n, rect_l, classes, center, farthest)[idx]


def encode_pairs(
    flat: torch.Tensor, n: int, rect_l: float, class_max: int, threshold: float
) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor, int, dict[str, float]]:
    """The released ``compress_decom_v3`` for one flattened tensor.

    Returns (indices, classes, centroid fp32, farthest pair fp32, pad, facts). The class count is
    the first of 1..class_max whose mean absolute error over the (padded) tensor is at most
    ``threshold``, else the one with the least error (ties to the larger count); 0 if every pair
    lies in the square.
    """
    w = flat.detach().reshape(-1).double().cpu()
    pad = w.numel() % 2
    if pad:
        w = torch.cat([w, w.mean()[None]])
    pairs = w.reshape(-1, 2)
    center32 = pairs.mean(dim=0).float()
    c = center32.double()
    x, y = pairs[:, 0], pairs[:, 1]
    dist = ((x - c[0]) ** 2 + (y - c[1]) ** 2).sqrt()
    farthest32 = pairs[int(torch.argmax(dist))].float()
    half = rect_l / 2
    inner = (x >= c[0] - half) & (x <= c[0] + half) & (y >= c[1] - half) & (y <= c[1] + half)
    idx = torch.zeros(pairs.shape[0], dtype=torch.int64)
    idx[inner] = lattice_snap(pairs[inner], n, rect_l, c)
    inner_err = float((lattice_decode(idx[inner], n, rect_l, 0, c, farthest32) - pairs[inner]).abs().sum())
    outer = ~inner
    n_outer = int(outer.sum())
    classes = 0
    if n_outer:
        far_dis = far_distance(c, farthest32.double())
        out_pairs, out_dist = pairs[outer], dist[outer]
        best_mae, best = math.inf, None
        for k in range(1, class_max + 1):  # a loop over class counts, each fully vectorized
            cls = ring_classes(out_dist, k, rect_l, far_dis)
            f = ring_factors(cls, k, rect_l, far_dis)[:, None]
            code = lattice_snap(c + (out_pairs - c) * f, n, rect_l, c) + (n + 1) * cls
            err = float((lattice_decode(code, n, rect_l, k, c, farthest32) - out_pairs).abs().sum())
            mae = (inner_err + err) / w.numel()
            if mae <= best_mae:
                best_mae, best = mae, (k, code)
            if mae <= threshold:
                best_mae, best = mae, (k, code)
                break
        if best is None:
            raise ValueError("cannot encode a tensor with non-finite values")
        classes, idx[outer] = best[0], best[1]
        mae = best_mae
    else:
        mae = inner_err / w.numel()
    return idx, classes, center32, farthest32, pad, {"outer_pairs": n_outer, "mae_padded": mae}


# -- canonical: the irrational winding on the K-torus ---------------------------------------------------
def winding_direction(k: int) -> torch.Tensor:
    """a_k = 1/(π + k), k = 0..K-1 (rationally independent)."""
    return 1.0 / (math.pi + torch.arange(k, dtype=torch.float64))


def trajectory(nv: torch.Tensor, k: int, delta: float) -> torch.Tensor:
    """x(n) = frac(n·δ·a) for integer ``nv``: (len(nv), K) float64 in [0, 1)."""
    t = nv.to(torch.int64).double() * delta
    return torch.frac(t[:, None] * winding_direction(k)[None, :])


def _sq_dist(coords: list[torch.Tensor], pool: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Squared distances (P, L) from rows of (P, K) ``w`` to the points ``pool`` (P, L), given as one
    coordinate table per dimension (a sum over K by explicit adds: torch is slow to reduce a tiny dim)."""
    d = (coords[0][pool] - w[:, :1]) ** 2
    for j in range(1, len(coords)):
        d += (coords[j][pool] - w[:, j : j + 1]) ** 2
    return d


def brute_force_nearest(w: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The reference search: argmin over all points, chunked over the groups (lowest index on ties)."""
    out = torch.empty(w.shape[0], dtype=torch.int64)
    coords = [c.contiguous() for c in points.double().T]
    every = torch.arange(points.shape[0])
    step = max(1, CHUNK // max(points.shape[0], 1))
    for i in range(0, w.shape[0], step):
        wc = w[i : i + step].double()
        out[i : i + step] = torch.argmin(_sq_dist(coords, every.expand(wc.shape[0], -1), wc), dim=1)
    return out


class WindingIndex:
    """Exact nearest trajectory point for many K-vectors in [0,1]^K, through a grid of candidate lists.

    For each of the g^K cells a codeword is a candidate when its distance to the cell is at most
    the least farthest-distance of any codeword to the cell: no other codeword can be nearest to any
    point of the cell. Lists are built from the codewords of the cells within ρ cells (ρ = 1, 2, ...):
    a codeword farther out is at least ρ/g away, so once that exceeds the bound the list is final;
    cells whose neighbourhood would hold N_c codewords anyway scan them all. Lists are sorted by n,
    so ties go to the smallest n, as in :func:`brute_force_nearest`.
    """

    MAX_CELLS = 1 << 20

    def __init__(self, k: int, n_c: int, delta: float, grid: int | None = None):
        self.k, self.n_c, self.delta = k, n_c, delta
        self.points = trajectory(torch.arange(n_c), k, delta)
        padded = torch.cat([self.points, torch.full((1, k), math.inf, dtype=torch.float64)])
        self.coords = [c.contiguous() for c in padded.T]  # sentinel n_c: infinitely far
        if grid is None:  # about 4 cells a codeword: short lists, a quick build
            grid = max(1, int(math.floor(min(4 * n_c, self.MAX_CELLS) ** (1.0 / k) + 1e-9)))
        self.grid = grid
        self.weights = torch.tensor([grid ** (k - 1 - d) for d in range(k)], dtype=torch.int64)
        self.table = self._build()

    def _cell(self, w: torch.Tensor) -> torch.Tensor:
        g = self.grid
        cell = torch.zeros(w.shape[0], dtype=torch.int64)
        for j, weight in enumerate(self.weights.tolist()):
            cell += torch.floor(w[:, j] * g).clamp(0, g - 1).to(torch.int64) * weight
        return cell

    def _digits(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.div(ids, w, rounding_mode="floor") % self.grid for w in self.weights.tolist()], dim=1)

    def _lists(self, ids: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bound, sorted candidate lists) of cells ``ids`` among the codewords ``pool`` (sentinel n_c)."""
        lo = self._digits(ids).double() / self.grid
        dmin: torch.Tensor | None = None
        dmax: torch.Tensor | None = None
        for j, coord in enumerate(self.coords):
            p, a, b = coord[pool], lo[:, j : j + 1], lo[:, j : j + 1] + 1.0 / self.grid
            gap = torch.clamp(torch.maximum(a - p, p - b), min=0) ** 2
            far = torch.maximum((p - a) ** 2, (p - b) ** 2)
            dmin, dmax = (gap, far) if dmin is None or dmax is None else (dmin + gap, dmax + far)
        if dmin is None or dmax is None:
            raise ValueError("the codebook has no coordinates")
        bound = dmax.min(dim=1).values * (1 + 1e-9) + 1e-15  # a margin only adds candidates
        mask = dmin <= bound[:, None]
        width = max(1, int(mask.sum(dim=1).max()))
        keys = torch.where(mask, pool, self.n_c)
        return bound, torch.topk(keys, min(width, keys.shape[1]), dim=1, largest=False, sorted=True).values

    def _build(self) -> torch.Tensor:
        g, k, n_c = self.grid, self.k, self.n_c
        cells = g**k
        # the codewords of each cell, in increasing n (row `cells` is an empty cell)
        cell_of = self._cell(self.points)
        order = torch.argsort(cell_of * n_c + torch.arange(n_c))
        occ = torch.bincount(cell_of, minlength=cells)
        bucket = torch.full((cells + 1, max(1, int(occ.max()))), n_c, dtype=torch.int64)
        cs = cell_of[order]
        bucket[cs, torch.arange(n_c) - (torch.cumsum(occ, 0) - occ)[cs]] = order
        done: list[tuple[torch.Tensor, torch.Tensor]] = []
        pending, rho = torch.arange(cells), 1
        while pending.numel():
            offsets = torch.tensor(list(itertools.product(range(-rho, rho + 1), repeat=k)), dtype=torch.int64)
            scan_all = rho >= g or offsets.shape[0] * bucket.shape[1] >= n_c
            width = n_c if scan_all else offsets.shape[0] * bucket.shape[1]
            step = max(1, CHUNK // (width * k))
            left = []
            for i in range(0, pending.numel(), step):
                ids = pending[i : i + step]
                if scan_all:
                    pool = torch.arange(n_c).expand(ids.numel(), n_c)
                else:
                    nd = self._digits(ids)[:, None, :] + offsets[None]
                    inside = ((nd >= 0) & (nd < g)).all(dim=-1)
                    near = torch.where(inside, (nd * self.weights).sum(dim=-1), cells)
                    pool = bucket[near].reshape(ids.numel(), -1)
                bound, lists = self._lists(ids, pool)
                final = torch.ones_like(bound, dtype=torch.bool) if scan_all else bound < (rho / g) ** 2
                done.append((ids[final], lists[final]))
                left.append(ids[~final])
            pending, rho = torch.cat(left), rho + 1
        width = max(int((lists < n_c).sum(dim=1).max()) for _, lists in done if lists.numel())
        table = torch.full((cells, width), n_c, dtype=torch.int64)
        for ids, lists in done:
            table[ids, : min(width, lists.shape[1])] = lists[:, :width]
        return table

    def nearest(self, w: torch.Tensor) -> torch.Tensor:
        """argmin_n ||x(n) - w||₂ for each row of (G, K) ``w`` in [0,1]^K."""
        w = w.double()
        out = torch.empty(w.shape[0], dtype=torch.int64)
        step = max(1, CHUNK // self.table.shape[1])
        for i in range(0, w.shape[0], step):
            wc = w[i : i + step]
            cand = self.table[self._cell(wc)]
            best = torch.argmin(_sq_dist(self.coords, cand, wc), dim=1, keepdim=True)
            out[i : i + step] = cand.gather(1, best).squeeze(1)
        return out


@functools.lru_cache(maxsize=4)
def winding_index(k: int, n_c: int, delta: float) -> WindingIndex:
    """The index for one (K, N_c, δ), built once and shared by every tensor of a model."""
    return WindingIndex(k, n_c, delta)
