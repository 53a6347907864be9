"""NeRN's kernel coordinates, their "smooth" positional encoding, and the kernel permutations.

A predicted conv layer ℓ of L, with weight C_out × C_in × k × k, has one coordinate per kernel:
(ℓ/L, f/C_out, c/C_in), normalised locally as in NeRN, each in [0, 1). The encoding is
γ(p) = [sin(π β^j p), cos(π β^j p)]_{j<J} for each of the three, concatenated (6J features).

Permutations reorder which kernel sits at which grid coordinate, so that neighbouring coordinates
hold similar kernels (a smoother function for the predictor). Grid position t holds kernel
``src[t]`` (kernels flattened filter-major); decoding scatters the predictions back. NeRN finds
the orders with a max-similarity TSP heuristic that takes hours on ResNet-18; ours is cheap:
a greedy nearest-neighbour chain for up to ``GREEDY_LIMIT`` kernels, else a sort on the
projection onto the first principal component. ``similarity`` says which kernels are near:
"euclidean" (the distance between kernels) or "cosine" (NeRN's: the cosine similarity, i.e. the
distance between the kernels scaled to unit norm, so kernels of one shape and different
magnitudes are neighbours; the chain still starts at the largest-norm kernel).

- crossfilter: one order of all C_out·C_in kernels of the layer; stored as C_out·C_in entries of
  ⌈log2(C_out·C_in)⌉ bits.
- infilter: for each filter an order of its C_in kernels, then an order of the filters; stored as
  C_out·C_in entries of ⌈log2 C_in⌉ bits plus C_out entries of ⌈log2 C_out⌉ bits (as NeRN's).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from b2s_bench import ceil_log2, pack_bits, unpack_bits

from .config import PERMUTATIONS, SIMILARITIES

__all__ = [
    "GREEDY_LIMIT",
    "PERMUTATIONS",
    "SIMILARITIES",
    "order_rows",
    "encode",
    "grid_coords",
    "layer_order",
    "source_index",
    "permutation_bits",
    "pack_orders",
    "unpack_orders",
]

GREEDY_LIMIT = 4096
#: how kernel orders measure similarity (``NernConfig.similarity``)


def encode(coords: torch.Tensor, levels: int, base: float) -> torch.Tensor:
    """(N, 3) coordinates in [0, 1) -> (N, 6·levels) features: per coordinate J sines, then J cosines."""
    freqs = math.pi * base ** torch.arange(levels, dtype=torch.float64, device=coords.device)
    x = coords.double()[:, :, None] * freqs  # (N, 3, J), in float64 so the features do not depend on rounding
    return torch.cat([torch.sin(x), torch.cos(x)], dim=-1).reshape(coords.shape[0], -1).float()


def grid_coords(layer: int, num_layers: int, c_out: int, c_in: int) -> torch.Tensor:
    """(C_out·C_in, 3) coordinates (ℓ/L, f/C_out, c/C_in) of a layer's grid, filter-major."""
    f = torch.arange(c_out, dtype=torch.float64).repeat_interleave(c_in) / c_out
    c = torch.arange(c_in, dtype=torch.float64).repeat(c_out) / c_in
    return torch.stack([torch.full_like(f, layer / num_layers), f, c], dim=1)


def _greedy_chain(x: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
    """(B, n, d) -> (B, n): for each batch, a nearest-neighbour chain from row ``start`` (default:
    the largest-norm row)."""
    b, n, _ = x.shape
    order = torch.empty(b, n, dtype=torch.long)
    visited = torch.zeros(b, n, dtype=torch.bool)
    rows = torch.arange(b)
    current = x.norm(dim=2).argmax(dim=1) if start is None else start
    for t in range(n):
        order[:, t] = current
        visited[rows, current] = True
        if t == n - 1:
            break
        dist = (x - x[rows, current][:, None, :]).pow(2).sum(dim=2)
        dist[visited] = math.inf
        current = dist.argmin(dim=1)
    return order


def _principal_sort(x: torch.Tensor) -> torch.Tensor:
    """(B, n, d) -> (B, n): rows sorted by their projection on the first principal component."""
    centred = x - x.mean(dim=1, keepdim=True)
    cov = centred.transpose(1, 2) @ centred
    _, vecs = torch.linalg.eigh(cov.double())
    proj = (centred.double() @ vecs[:, :, -1:]).squeeze(2)
    return torch.argsort(proj, dim=1, stable=True)


def order_rows(x: torch.Tensor, greedy_limit: int | None = None, similarity: str = "euclidean") -> torch.Tensor:
    """An order of the rows of each batch (B, n, d) in which consecutive rows are similar
    (``similarity``: "euclidean" distance, or "cosine": the distance between rows scaled to unit norm)."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {list(SIMILARITIES)}, got {similarity!r}")
    x = x.detach().float().cpu()
    if x.shape[1] <= 1:
        return torch.zeros(x.shape[0], x.shape[1], dtype=torch.long)
    limit = GREEDY_LIMIT if greedy_limit is None else greedy_limit
    start = x.norm(dim=2).argmax(dim=1)
    if similarity == "cosine":  # nearest by cosine similarity = nearest among unit vectors
        x = x / x.norm(dim=2, keepdim=True).clamp(min=1e-12)
    return _greedy_chain(x, start) if x.shape[1] <= limit else _principal_sort(x)


def layer_order(weight: torch.Tensor, mode: str, similarity: str = "euclidean") -> dict[str, torch.Tensor]:
    """The permutation tables of a layer (C_out, C_in, k, k) for ``mode`` (empty for "none")."""
    c_out, c_in = int(weight.shape[0]), int(weight.shape[1])
    kernels = weight.detach().reshape(c_out, c_in, -1)
    if mode == "crossfilter":
        return {"order": order_rows(kernels.reshape(1, c_out * c_in, -1), similarity=similarity)[0]}
    if mode == "infilter":
        channels = order_rows(kernels, similarity=similarity)  # (C_out, C_in): filter f's kernels in chain order
        permuted = torch.gather(kernels, 1, channels[:, :, None].expand_as(kernels))
        filters = order_rows(permuted.reshape(1, c_out, -1), similarity=similarity)[0]
        return {"filters": filters, "channels": channels}
    return {}


def source_index(orders: dict[str, torch.Tensor], c_out: int, c_in: int) -> torch.Tensor | None:
    """``src`` with grid position t holding kernel src[t] (None for the identity)."""
    if "order" in orders:
        return orders["order"]
    if "filters" in orders:
        f = orders["filters"]
        return (f[:, None] * c_in + orders["channels"][f]).reshape(-1)
    return None


def permutation_bits(mode: str, c_out: int, c_in: int) -> int:
    if mode == "crossfilter":
        return c_out * c_in * ceil_log2(c_out * c_in)
    if mode == "infilter":
        return c_out * c_in * ceil_log2(c_in) + c_out * ceil_log2(c_out)
    return 0


def _widths(mode: str, c_out: int, c_in: int) -> dict[str, tuple[int, int]]:
    """name -> (entries, bits per entry) of the stored tables."""
    if mode == "crossfilter":
        return {"order": (c_out * c_in, ceil_log2(c_out * c_in))}
    if mode == "infilter":
        return {"filters": (c_out, ceil_log2(c_out)), "channels": (c_out * c_in, ceil_log2(c_in))}
    return {}


def pack_orders(mode: str, orders: dict[str, torch.Tensor], c_out: int, c_in: int) -> dict[str, torch.Tensor]:
    """The tables packed at their bit widths (a table of one-element permutations is not stored)."""
    return {
        f"perm.{name}": pack_bits(orders[name].reshape(-1), nbits)
        for name, (_, nbits) in _widths(mode, c_out, c_in).items()
        if nbits
    }


def unpack_orders(mode: str, packed: Mapping[str, torch.Tensor], c_out: int, c_in: int) -> dict[str, torch.Tensor]:
    """Inverse of :func:`pack_orders`."""
    out = {}
    for name, (count, nbits) in _widths(mode, c_out, c_in).items():
        if nbits:
            values = unpack_bits(packed[f"perm.{name}"], nbits, count)
        else:
            values = torch.zeros(count, dtype=torch.long)
        out[name] = values.reshape(c_out, c_in) if name == "channels" else values
    return out
