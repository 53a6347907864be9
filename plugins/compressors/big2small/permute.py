"""Reordering rows and columns so that neighbouring entries are alike: the one lever that gives an INR
structure to fit (after NeRN's permutation smoothing, arXiv 2212.13554).

An INR is a smooth function of the coordinates; trained weights are nearly independent of their
neighbours (autocorrelation 0.00–0.14), so it has little to fit. Reordering the rows of the 2-D view
(out x in·k·k) and its columns can make neighbours similar. Our [D] orders, a setting (``permute``):

* ``"pca"``: rows sorted by their projection on the rows' first principal component, columns by the
  columns' (one ``argsort`` each: cheap at any size). The first singular component becomes smooth.
* ``"greedy"``: a nearest-neighbour chain (Euclidean) from the largest-norm row, and likewise for
  the columns, for axes of up to ``GREEDY_LIMIT`` vectors (quadratic time), else ``"pca"``.

Stored: both orders, ⌈log2 n⌉ bits per index (an axis of length 1 stores nothing), counted under
``indices``. (A Lehmer code would save about 1.44 bits per index; not worth the complexity here.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from b2s_bench import ceil_log2, pack_bits, unpack_bits

from .config import PERMUTES

__all__ = ["PERMUTES", "GREEDY_LIMIT", "orders", "order_bits", "pack_orders", "unpack_orders", "inverse"]

GREEDY_LIMIT = 4096


def _pca_order(x: torch.Tensor) -> torch.Tensor:
    """Rows of (n, d) sorted by their projection on the first principal component."""
    centred = x - x.mean(dim=0, keepdim=True)
    if x.shape[1] == 1:
        return torch.argsort(centred[:, 0], stable=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return torch.argsort(centred @ v[0], stable=True)


def _greedy_order(x: torch.Tensor) -> torch.Tensor:
    """A nearest-neighbour chain through the rows of (n, d), from the largest-norm row."""
    n = x.shape[0]
    sq = x.pow(2).sum(1)
    order = torch.empty(n, dtype=torch.int64)
    visited = torch.zeros(n, dtype=torch.bool)
    current = int(sq.argmax())
    for t in range(n):
        order[t] = current
        visited[current] = True
        if t == n - 1:
            break
        dist = sq - 2 * (x @ x[current])  # |x_i − x_c|² − |x_c|²: the same argmin
        dist[visited] = math.inf
        current = int(dist.argmin())
    return order


def _axis_order(x: torch.Tensor, mode: str) -> torch.Tensor:
    if x.shape[0] <= 1:
        return torch.zeros(x.shape[0], dtype=torch.int64)
    if mode == "greedy" and x.shape[0] <= GREEDY_LIMIT:
        return _greedy_order(x)
    return _pca_order(x)


def orders(m: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(row order, column order) with permuted = m[rows][:, cols]; None for ``"none"``."""
    if mode not in PERMUTES:
        raise ValueError(f"permute must be one of {PERMUTES}, got {mode!r}")
    if mode == "none":
        return None
    x = m.detach().double().cpu()
    return _axis_order(x, mode), _axis_order(x.T.contiguous(), mode)


def inverse(order: torch.Tensor) -> torch.Tensor:
    inv = torch.empty_like(order)
    inv[order] = torch.arange(len(order), device=order.device)
    return inv


def order_bits(rows: int, cols: int) -> int:
    """Stored bits of the two orders of a rows x cols matrix."""
    return rows * ceil_log2(rows) + cols * ceil_log2(cols)


def pack_orders(row_order: torch.Tensor, col_order: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {}
    for name, order in (("perm_rows", row_order), ("perm_cols", col_order)):
        if ceil_log2(len(order)):
            out[name] = pack_bits(order.to(torch.int64), ceil_log2(len(order)))
    return out


def unpack_orders(tensors: Mapping[str, torch.Tensor], rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    def one(name: str, n: int) -> torch.Tensor:
        if not ceil_log2(n):
            return torch.zeros(n, dtype=torch.int64)
        return unpack_bits(tensors[name], ceil_log2(n), n).to(torch.int64)

    return one("perm_rows", rows), one("perm_cols", cols)
